"""TaskFlow decorators: ``@task.segmind`` and ``@task.segmind_batch`` (registered in ``get_provider_info``)."""
