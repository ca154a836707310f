"""`python -m services.inference`: uvicorn serving the API, as supervisord runs it."""
import sys

import uvicorn

from entrypoint import logs
from entrypoint.context import current
from services.inference import api_token, bind_host
from services.inference.app import create_app
from services.inference.protocol import with_head_deadline
from services.inference.settings import InferenceSettings

ctx = current()
logs.configure(ctx.core.podvisor_log_level, stream=sys.stderr)
settings = ctx.settings(InferenceSettings)
uvicorn.run(create_app(settings, api_token(ctx), ctx.paths.heartbeat_file("inference")), host=bind_host(ctx),
            port=settings.inference_port, log_level="warning", access_log=False,
            http=with_head_deadline(settings.inference_header_timeout_seconds),
            timeout_keep_alive=settings.inference_keep_alive_seconds)
