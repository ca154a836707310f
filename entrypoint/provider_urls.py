"""The providers' control API base URLs, named once for the pod's stop action and the laptop's `podvisor cloud`.

RunPod: REST v2 (https://api.runpod.io/v2; v1 at rest.runpod.io/v1 is retired), and GraphQL only where v2 has no
route (announced to retire in 2027). Vast.ai: its REST API v0. A leaf: both settings classes ask it.
"""
from __future__ import annotations

RUNPOD_API_URL = "https://api.runpod.io/v2"
RUNPOD_GRAPHQL_URL = "https://api.runpod.io/graphql"
VAST_API_URL = "https://console.vast.ai/api/v0"
