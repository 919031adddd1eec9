"""The old home of the service, kept so that ``captcha_edge.serve.app`` imports still work: the
code now lives in the modules named in :mod:`captcha_edge.serve` (models, runner, http,
process, metrics, openapi, errors), and this module only re-exports their public names.

A module-level setting is read where it is defined: set ``process.REUSE_PORT``, not
``app.REUSE_PORT``. ``python -m captcha_edge.serve.app`` still starts a ``--processes`` child,
so a supervisor started before an upgrade can restart its children after it.
"""
from __future__ import annotations

import os
import sys

from .errors import BodyTooLarge, HTTPError
from .http import (
    OPTION_FIELDS,
    Guard,
    Settings,
    create_app,
    error_response,
    parse_options,
    read_images,
)
from .metrics import Metrics
from .models import LoadedModel, ModelSet, bundled_models
from .openapi import openapi_document
from .process import (
    _CHILD_ENV,
    REUSE_PORT,
    _child_main,
    batch_while_busy,
    listening_socket,
    run,
    run_processes,
    server_stack,
)
from .runner import Runner, recognize_chunk

__all__ = ["OPTION_FIELDS", "REUSE_PORT", "BodyTooLarge", "Guard", "HTTPError", "LoadedModel",
           "Metrics", "ModelSet", "Runner", "Settings", "batch_while_busy", "bundled_models",
           "create_app", "error_response", "listening_socket", "openapi_document",
           "parse_options", "read_images", "recognize_chunk", "run", "run_processes",
           "server_stack"]

if __name__ == "__main__" and _CHILD_ENV in os.environ:
    sys.exit(_child_main())
