"""Structural reading of launch files with ``ast`` (works where ``launch`` is not installed)."""

import ast
from pathlib import Path

# Functions whose first argument names a launch argument that the file reads.
READERS = ('LaunchConfiguration', '_flag')


def _call_name(call: ast.Call) -> str:
    return getattr(call.func, 'id', '') or getattr(call.func, 'attr', '')


def launch_arguments(path: Path) -> tuple[dict[str, str], set[str]]:
    """
    Return ({declared argument: its description text}, {argument names the file reads}).

    The file must compile. Reads are the constant first arguments of ``READERS`` calls; a reader
    called with a variable (inside a helper) is skipped, its callers' constants count.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    compile(tree, str(path), 'exec')
    declared = {}
    used = set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        if _call_name(call) == 'DeclareLaunchArgument':
            keywords = {k.arg: k.value for k in call.keywords}
            description = keywords.get('description')
            text = ''.join(part.value for part in ast.walk(description)
                           if isinstance(part, ast.Constant) and isinstance(part.value, str))
            declared[call.args[0].value] = text
        elif _call_name(call) in READERS:
            names = [a for a in call.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str)]
            if names:
                used.add(names[0].value)
    return declared, used
