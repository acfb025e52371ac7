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
    from airflow.sdk import BaseOperator, Context

__all__ = ["segmind_batch_task", "segmind_task"]


class _FunctionPayload(DecoratedOperator):
    """The part both decorated operators share: the operator's payload field is the function's return value.

    :param python_callable: the function returning the payload (or payloads).
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    """

    #: The operator's field the function fills, and its value until the function has run.
    payload_field: ClassVar[str]
    placeholder: ClassVar[Any]
    overwrite_rtif_after_execution: bool = True  # the Rendered Templates tab shows what was sent

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs[self.payload_field] = self.placeholder
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    def checked(self, value: Any) -> Any:
        """The function's return value if it has the field's shape; a TypeError naming the function if not."""
        raise NotImplementedError

    def fill(self, context: Context) -> None:
        """Run the function for this try (its arguments resolved as TaskFlow does) and set the field."""
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        setattr(self, self.payload_field, self.checked(self.python_callable(*self.op_args, **kwargs)))

    def execute(self, context: Context) -> Any:
        self.fill(context)
        return super().execute(context)


def _fields(operator: type[BaseOperator]) -> tuple[Sequence[str], dict[str, str]]:
    """The template fields and renderers of the function's arguments and of the operator."""
    return (
        (*DecoratedOperator.template_fields, *operator.template_fields),
        {**DecoratedOperator.template_fields_renderers, **operator.template_fields_renderers},
    )


class _SegmindDecoratedOperator(_FunctionPayload, SegmindOperator):
    """A ``SegmindOperator`` whose payload is the decorated function's return value."""

    template_fields, template_fields_renderers = _fields(SegmindOperator)
    custom_operator_name: str = "@task.segmind"
    payload_field = "payload"
    placeholder: ClassVar[Any] = {}

    def checked(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise TypeError(
                f"the @task.segmind function {self.python_callable.__name__} must return the payload "
                f"dict, got {type(value).__name__}"
            )
        return dict(value)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.fill(context)  # a resumed task is a new operator object: its payload is the placeholder
        return super().execute_complete(context, event)


class _SegmindBatchDecoratedOperator(_FunctionPayload, SegmindBatchOperator):
    """A ``SegmindBatchOperator`` whose payloads are the decorated function's return value."""

    template_fields, template_fields_renderers = _fields(SegmindBatchOperator)
    custom_operator_name: str = "@task.segmind_batch"
    payload_field = "payloads"
    placeholder: ClassVar[Any] = []

    def checked(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Mapping, Sequence)):
            raise TypeError(
                f"the @task.segmind_batch function {self.python_callable.__name__} must return a list of "
                f"payloads or a dict of item key to payload, got {type(value).__name__}"
            )
        return value

    def execute_wave(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.fill(context)
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
