"""Pure-Python building blocks of the ``segmind_content_pipeline`` example.

They live next to the DAG file (Airflow puts the dags folder on ``sys.path``), carry no Airflow
imports at module level and do no I/O on import, so the DAG parses fast and the logic is unit-tested
without a scheduler.
"""
