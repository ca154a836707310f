"""`python -m services.autostop`: the idle watchdog supervisord runs."""
from services.autostop.monitor import main

main()
