"""`python -m services.inference`: uvicorn serving the API, as supervisord runs it."""
import logging

import uvicorn

from entrypoint.context import current
from services.inference import api_token, bind_host
from services.inference.app import create_app
from services.inference.settings import InferenceSettings

logging.basicConfig(level=logging.INFO, format="%(message)s")
ctx = current()
settings = ctx.settings(InferenceSettings)
uvicorn.run(create_app(settings, api_token(ctx), ctx.paths.heartbeat_file("inference")), host=bind_host(ctx),
            port=settings.inference_port, log_level="warning", access_log=False)
