"""`python -m services.sentiment`: run the sentiment service alone."""

from services.sentiment.app import main

main()
