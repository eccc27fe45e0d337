"""`python -m services.ingest`: run the ingest service alone."""

from services import leave_working_directory_off_the_path

leave_working_directory_off_the_path()

from services.ingest.app import main  # noqa: E402 (the import path is set first)

main()
