"""``@task.segmind`` and ``@task.segmind_batch``: the decorated function returns the payload(s), the operator does the rest.

The function runs on the worker when the task starts and, for a deferred task, again when it resumes
(an operator's payload is not kept across a deferral; its templated fields are rendered again the
same way), so it should build the payload from its arguments without side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import (
    DecoratedOperator,
    TaskDecorator,
    determine_kwargs,
    task_decorator_factory,
)
from airflow.sdk.definitions.context import context_merge

from segmind_provider.operators.batch import SegmindBatchOperator
from segmind_provider.operators.segmind import SegmindOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["segmind_batch_task", "segmind_task"]


def _call(operator: DecoratedOperator, context: Context) -> Any:
    """The decorated function's return value for this try (its arguments resolved as TaskFlow does)."""
    context_merge(context, operator.op_kwargs)
    kwargs = determine_kwargs(operator.python_callable, operator.op_args, context)
    return operator.python_callable(*operator.op_args, **kwargs)


class _SegmindDecoratedOperator(DecoratedOperator, SegmindOperator):
    """A ``SegmindOperator`` whose payload is the decorated function's return value.

    :param python_callable: the function returning the payload dict.
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *SegmindOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **SegmindOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.segmind"
    overwrite_rtif_after_execution: bool = True  # the Rendered Templates tab shows the payload sent

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, payload={}, **kwargs
        )

    def _payload(self, context: Context) -> None:
        payload = _call(self, context)
        if not isinstance(payload, Mapping):
            raise TypeError(
                f"the @task.segmind function {self.python_callable.__name__} must return the payload "
                f"dict, got {type(payload).__name__}"
            )
        self.payload = dict(payload)

    def execute(self, context: Context) -> Any:
        self._payload(context)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self._payload(context)
        return super().execute_complete(context, event)


class _SegmindBatchDecoratedOperator(DecoratedOperator, SegmindBatchOperator):
    """A ``SegmindBatchOperator`` whose payloads are the decorated function's return value.

    :param python_callable: the function returning the payloads (a list, or a dict of item key to payload).
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *SegmindBatchOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **SegmindBatchOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.segmind_batch"
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, payloads=[], **kwargs
        )

    def _payloads(self, context: Context) -> None:
        payloads = _call(self, context)
        if isinstance(payloads, (str, bytes)) or not isinstance(payloads, (Mapping, Sequence)):
            raise TypeError(
                f"the @task.segmind_batch function {self.python_callable.__name__} must return a list of "
                f"payloads or a dict of item key to payload, got {type(payloads).__name__}"
            )
        self.payloads = payloads

    def execute(self, context: Context) -> Any:
        self._payloads(context)
        return super().execute(context)

    def execute_wave(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self._payloads(context)
        return super().execute_wave(context, event)


def segmind_task(
    python_callable: Callable[..., Mapping[str, Any]] | None = None,
    *,
    model: str,
    output_path: Any = None,
    **kwargs: Any,
) -> TaskDecorator:
    """``@task.segmind``: the function returns one payload; ``SegmindOperator`` generates and stores it.

    Deferrable, mappable (``.expand()``), its return value the operator's (docs/operator.md).

    :param python_callable: the function returning the payload dict (when used without parentheses).
    :param model: the Segmind model slug, e.g. ``flux-1.1-pro``.
    :param output_path: where to store the output (templated; ``{{ ti.map_index }}`` for a mapped task).
    :param kwargs: any other ``SegmindOperator`` or ``BaseOperator`` argument (``deferrable``,
        ``timeout``, ``input_files``, ``retries``...).
    """
    kwargs.setdefault("multiple_outputs", False)  # not inferred from a ``-> dict`` annotation
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_SegmindDecoratedOperator,
        model=model,
        output_path=output_path,
        **kwargs,
    )


def segmind_batch_task(
    python_callable: Callable[..., Any] | None = None,
    *,
    model: str,
    output_dir: Any = None,
    **kwargs: Any,
) -> TaskDecorator:
    """``@task.segmind_batch``: the function returns the payloads; ``SegmindBatchOperator`` runs the batch.

    :param python_callable: the function returning a list of payloads or a dict of item key to payload.
    :param model: the Segmind model slug.
    :param output_dir: where item ``k`` is stored as ``{output_dir}/{k}.{ext}`` beside ``manifest.json``.
    :param kwargs: any other ``SegmindBatchOperator`` or ``BaseOperator`` argument (``max_in_flight``,
        ``deferrable``, ``reuse``...).
    """
    kwargs.setdefault("multiple_outputs", False)
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_SegmindBatchDecoratedOperator,
        model=model,
        output_dir=output_dir,
        **kwargs,
    )
