"""File names and safe writing: NIfTI stems, never writing over an input, atomic writes.

Light on purpose (the standard library only), so that the command line checks its paths and
answers a refused command before it imports torch.
"""

from __future__ import annotations

import glob
import json
import os
import secrets

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so concurrent writers are not kept apart there
    fcntl = None
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii.gz`` or ``.nii``: ``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``."""
    name = Path(path).name
    return name.removesuffix(".gz").removesuffix(".nii") if name.endswith((".nii", ".nii.gz")) else name


def is_plain_name(name: str) -> bool:
    """Whether ``name`` names a file inside a folder: not empty, ``.`` or ``..``, and no folder part or absolute path.

    Names read from a record or given as a stem must pass before they are joined to a folder,
    so that ``../../victim.txt`` can neither be written nor deleted outside it.
    """
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and Path(name).name == name


def refuse_to_overwrite_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise if an output would replace an input or hold it, whatever the spelling of the paths.

    Paths are compared resolved (``..``, links, relative and absolute spellings all count), so
    ``fss segment scan.nii.gz -o ./scan.nii.gz --overwrite`` cannot replace the scan.

    Raises
    ------
    ValueError
        Naming the output and the input it would destroy.
    """
    resolved = {Path(i).resolve(): Path(i) for i in inputs}
    for output in outputs:
        target = Path(output).resolve()
        if target in resolved:
            raise ValueError(f"{output} is also an input ({resolved[target]}): fss never writes over its inputs; choose another output")


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    An interrupted or failing write leaves neither a half-written file nor a changed ``path``.
    The temporary file (``.<name>.<process id>-<random><suffixes>``: the suffixes of ``path``, so
    ``.nii.gz`` is still compressed) is created with the permissions of any new file (the
    umask applies). One that a killed process left behind is removed by the next write of
    ``path``; one whose process still runs is another write in progress and is left alone.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
        if not _writer_running(leftover.name[len(path.name) + 2 :]):
            leftover.unlink(missing_ok=True)
    temporary = _new_file(path.parent, f".{path.name}.{os.getpid()}-", suffix)
    mode = temporary.stat().st_mode & 0o777  # the umask's, read without touching the process umask
    try:
        yield temporary
        if temporary.stat().st_mode & 0o777 != mode:  # a writer that recreated the file with its own mode (safetensors: 0600)
            temporary.chmod(mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty file ``prefix<random>suffix`` in ``folder`` that did not exist, mode 0o666 less the umask."""
    while True:
        candidate = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue


def _writer_running(tail: str) -> bool:
    """Whether the process named at the start of a temporary file's name tail (``<pid>-...``) still runs."""
    pid = tail.split("-", 1)[0]
    if not pid.isdigit() or int(pid) == 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def locked(path: str | os.PathLike, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the folder or file at ``path`` (a file is created if missing) while the block runs.

    Yields whether the lock is held: with ``wait`` always (after waiting for another holder),
    without it false at once when another process holds it. Other processes that take the same
    lock are kept out; nothing else is (an advisory lock; none on Windows).
    """
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def sole_writer(folder: str | os.PathLike, doing: str) -> Iterator[None]:
    """Make ``folder`` if needed and hold its lock (:func:`locked`) while the block writes there.

    Raises
    ------
    FileExistsError
        At once, when another process holds it: ``"<folder>: another process is <doing> into this folder; ..."``.
        Two writers into one output would mix their files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder, wait=False) as held:
        if not held:
            raise FileExistsError(f"{folder}: another process is {doing} into this folder; wait for it to end, or choose another folder")
        yield


@contextmanager
def claimed(output: str | os.PathLike) -> Iterator[bool]:
    """Hold the claim on one output file while the block writes it and its companions; yields whether it is held.

    The claim is an exclusive lock on ``.<name>.lock`` beside ``output``, removed on release; it is not
    held (false at once) while another process holds it, so that two processes never write one output
    (its files would come from both). None on Windows (no advisory locks): always true there.
    """
    output = Path(output)
    lock = output.parent / f".{output.name}.lock"
    output.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                try:
                    if os.stat(lock).st_ino != os.fstat(descriptor).st_ino:
                        continue  # its holder removed the file after we opened it: claim the file there now
                except FileNotFoundError:
                    continue
            try:
                yield True
            finally:
                lock.unlink(missing_ok=True)
            return
        finally:
            os.close(descriptor)


STAGING_PREFIX = ".staged-"
"""The start of the name of a folder in which :func:`staged_files` prepares files that replace their namesakes together."""

_COMMITTED = "committed.json"


@contextmanager
def staged_files(folder: str | os.PathLike, label: str) -> Iterator[Path]:
    """Yield an empty folder in which to write files that replace their namesakes in ``folder`` all together.

    When the block succeeds, a list of the staged files is written (atomically) beside them, each
    then moves over its namesake in ``folder`` (a rename within one file system) and the staging
    folder goes. A process killed before the list is written leaves the files of ``folder`` as they
    were; one killed after it leaves a staging folder that :func:`finish_staged` completes. When the
    block fails, the staging folder is removed and ``folder`` is unchanged. The caller is the
    folder's only writer (:func:`sole_writer`).

    Parameters
    ----------
    folder : path
    label : str
        Part of the staging folder's name (``.staged-<label>``), what :func:`finish_staged` reports.
    """
    staging = Path(folder) / f"{STAGING_PREFIX}{label}"
    _remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        names = sorted(path.name for path in staging.iterdir())
        with atomic_path(staging / _COMMITTED) as temporary:
            temporary.write_text(json.dumps(names))
    except BaseException:
        _remove_tree(staging)
        raise
    _move_committed(staging, names)


def finish_staged(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Complete the staged files a killed process had committed in ``folder`` and discard those it had not.

    Returns
    -------
    (completed, discarded) : the labels of the staging folders (see :func:`staged_files`) whose files now
        replace their namesakes, and of those removed without touching ``folder``.
    """
    completed, discarded = [], []
    for staging in sorted(Path(folder).glob(f"{glob.escape(STAGING_PREFIX)}*")):
        label = staging.name.removeprefix(STAGING_PREFIX)
        if (staging / _COMMITTED).is_file():
            _move_committed(staging, json.loads((staging / _COMMITTED).read_text()))
            completed.append(label)
        else:
            _remove_tree(staging)
            discarded.append(label)
    return completed, discarded


def _move_committed(staging: Path, names: list[str]) -> None:
    """Move the files ``names`` that are still in ``staging`` into its parent folder, then remove ``staging``."""
    for name in names:
        if is_plain_name(name) and (staging / name).is_file():  # moved already by a process killed half-way
            os.replace(staging / name, staging.parent / name)
    _remove_tree(staging)


def _remove_tree(path: Path) -> None:
    """Remove a staging folder (files only: :func:`staged_files` makes no subfolders), if it exists."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()
