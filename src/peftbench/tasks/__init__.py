"""The task registry: task name -> the module and class implementing it, or the task file shipped for it.

Modules are imported only when their task is asked for, so listing tasks stays cheap and a task whose
module is not there (yet) is simply not available. To add a text task, write a task file (docs/custom-task.md)
into peftbench/tasks/files/ and name it in SHIPPED_TASK_FILES; any other task is a `Task` subclass (see
tasks/base.py) in `peftbench/tasks/<module>.py` with a line in TASKS.
"""

from __future__ import annotations

import importlib
import importlib.util

from peftbench.config import ConfigError
from peftbench.tasks.base import Task

# name -> (module, class name)
TASKS: dict[str, tuple[str, str]] = {
    "math-tiny": ("peftbench.tasks.math_tiny", "MathTinyTask"),
    "math": ("peftbench.tasks.declared", "DeclaredTask"),
    "image-gen": ("peftbench.tasks.image_gen.task", "ImageGenTask"),
    "image-tiny": ("peftbench.tasks.image_tiny", "ImageTinyTask"),
}
# name -> description of the tasks that are task files shipped in peftbench/tasks/files/<name>.yaml
SHIPPED_TASK_FILES: dict[str, str] = {
    "math": "MetaMathQA -> GSM8K (the PEFT suite's published benchmark; base meta-llama/Llama-3.2-3B)",
}
DEFAULT_TASK = "math-tiny"


def available_tasks() -> list[str]:
    """Names of the registered tasks whose module exists."""
    return [name for name, (module, _) in TASKS.items() if importlib.util.find_spec(module) is not None]


def resolve_task_name(name: str) -> str:
    """A --task value as runs record and children receive it: a task file becomes an absolute path."""
    from pathlib import Path

    from peftbench.tasks.task_file import is_task_file

    return str(Path(name).expanduser().resolve()) if name not in TASKS and is_task_file(name) else name


def get_task(name: str) -> Task:
    """An instance of the task called `name`, or of the task declared in the YAML file `name` (see
    tasks/declared.py); an unknown name raises ConfigError listing the valid ones."""
    from peftbench.tasks.task_file import is_task_file

    if name not in TASKS and is_task_file(name):
        from peftbench.tasks.declared import DeclaredTask

        return DeclaredTask(name)
    if name not in TASKS or name not in available_tasks():
        raise ConfigError(
            f"unknown task {name!r}. Valid tasks: {', '.join(available_tasks())}, or a task file (.yaml, see "
            "docs/custom-task.md)"
        )
    if name in SHIPPED_TASK_FILES:
        from peftbench.tasks.declared import DeclaredTask
        from peftbench.tasks.task_file import shipped_task_file

        return DeclaredTask(shipped_task_file(name), registered_name=name, description=SHIPPED_TASK_FILES[name])
    module_name, class_name = TASKS[name]
    return getattr(importlib.import_module(module_name), class_name)()
