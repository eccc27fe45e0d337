"""`python -m services.escalation`: run the escalation service alone."""

from services.escalation.app import main

main()
