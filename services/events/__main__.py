"""`python -m services.events`: run the events service alone."""

from services.events.app import main

main()
