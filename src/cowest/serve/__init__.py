"""``cowest serve``: a trained collaboration (weak draft -> strong refine) as one OpenAI-compatible model.

- :mod:`cowest.serve.protocol`: request validation, response/stream bodies, OpenAI-style errors;
- :mod:`cowest.serve.collab`: one collaboration per request, weak drafting batched on one thread;
- :mod:`cowest.serve.app`: the Starlette app (``build_app``): routes, auth, admission, body limits;
- :mod:`cowest.serve.weak`: which weak model to serve (aligned > SFT > base);
- :mod:`cowest.serve.runner`: uvicorn, graceful shutdown.

Needs the ``serve`` extra (starlette, uvicorn): ``pip install 'cowest[serve]'``.
"""
