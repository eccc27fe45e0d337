"""`python -m services.ingest`: run the ingest service alone."""

from services.ingest.app import main

main()
