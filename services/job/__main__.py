"""`python -m services.job`: the job wrapper supervisord runs."""
from services.job.runner import main

main()
