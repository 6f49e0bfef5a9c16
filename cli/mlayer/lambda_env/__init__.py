"""The Lambda-like execution environment: the build's smoke test and the local runner stand on it.

:mod:`~mlayer.lambda_env.environment` (one execution environment: Lambda's ``sys.path``,
variables, limits and logs), :mod:`~mlayer.lambda_env.runtime_api` (the Runtime API that
drives ``awslambdaric``), :mod:`~mlayer.lambda_env.runtime_dir` (boto3 and ``awslambdaric``
standing in for ``/var/runtime``). It imports nothing from the build or from ``mlayer.local``.
"""
