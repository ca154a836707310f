"""`python -m services.uploader`: the uploader process supervisord runs."""
from services.uploader.uploader import main

main()
