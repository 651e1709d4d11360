"""The Fireworks page of the Airflow UI, and what the operators record for it.

``usage`` (imported by the operators, no web dependencies) writes the provenance annotations and
the GPU-time XCom; ``service`` reads them back with the remote state; ``app`` is the FastAPI app
the api-server mounts; ``fireworks`` holds the ``AirflowPlugin`` registered by the package's
``airflow.plugins`` entry point.
"""
