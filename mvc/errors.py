"""The one exception hierarchy of mvc, and the exit code each error maps to.

Exit codes never change meaning:

====  ==========================================
code  meaning
====  ==========================================
0     ok
1     other error
2     usage (bad argument, bad option value)
3     not found (model, ref, path, remote, object)
4     conflict or bad state (lock held, dirty tree, exists)
5     remote, auth or network
6     integrity (hash mismatch, corrupt file, bad signature)
130   interrupted
====  ==========================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_REMOTE = 5
EXIT_INTEGRITY = 6
EXIT_INTERRUPTED = 130


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, the noun in the plural unless ``n`` is one: ``1 object``, ``2 objects``.

    The one owner of counts in messages (the CLI's and the library's errors alike).
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class MvcError(Exception):
    """Base of every error mvc raises on purpose.

    Besides the text, an error carries what it is about as fields, so a program can
    react without parsing the message::

        try:
            mvc.show("net@v9")
        except mvc.RefNotFoundError as exc:
            print(exc.ref, exc.name)      # net@v9 net

    Args:
        message: one line naming the problem.
        hint: one line naming the fix (the next command to run), or None.
        ref: the ``NAME@REF`` (or git revision) the error is about.
        name: the model (or experiment) name.
        remote: the remote's name.
        path: the file or directory, as the user gave it or relative to the repository.
        candidates: what would have been valid (known models, remotes, versions).
    """

    exit_code = EXIT_OTHER

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        ref: str | None = None,
        name: str | None = None,
        remote: str | None = None,
        path: str | None = None,
        candidates: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.ref = ref
        self.name = name
        self.remote = remote
        self.path = path
        self.candidates = tuple(candidates)

    def __str__(self) -> str:
        return self.message


class UsageError(MvcError, ValueError):
    """A command-line argument or API argument is malformed."""

    exit_code = EXIT_USAGE


class NotFoundError(MvcError, LookupError):
    """Something named by the user does not exist."""

    exit_code = EXIT_NOT_FOUND


class NotARepoError(NotFoundError):
    """The directory is not inside a git repository (or not an mvc repo)."""


class PathNotFoundError(NotFoundError, FileNotFoundError):
    """A weight file or directory the user named does not exist."""

    @classmethod
    def weights(cls, path: object) -> PathNotFoundError:
        """The error for weights at ``path`` that do not exist (``mvc add``)."""
        return cls(f"{path}: no such file or directory", hint="check the path of the weights", path=str(path))


class ModelNotFoundError(NotFoundError):
    """No model of that name is tracked."""

    @classmethod
    def among(cls, name: str, known: tuple[str, ...], *, hint: str, where: str = "", ref: str | None = None) -> ModelNotFoundError:
        """``no model named 'x' (models: a, b)``, with the known names as ``candidates``."""
        return cls(
            f"no model named {name!r}{where} (models: {', '.join(known) or 'none yet'})",
            hint=hint,
            name=name,
            ref=ref,
            candidates=known,
        )


class RefNotFoundError(NotFoundError):
    """A ref (version, branch, tag, stage) does not resolve."""


class RemoteNotFoundError(NotFoundError):
    """No remote of that name, or no default remote."""


class MissingObjectError(NotFoundError):
    """The weights of a version are in no cache and no remote."""


class ConflictError(MvcError):
    """The repository is in a state that forbids the operation."""

    exit_code = EXIT_CONFLICT


class LockedError(ConflictError):
    """Another process holds the repository lock."""


class AmbiguousRefError(ConflictError):
    """A ref matches more than one version; the message lists them."""


class RemoteError(MvcError):
    """A remote failed: network, auth, permissions, missing bucket."""

    exit_code = EXIT_REMOTE


class IntegrityError(MvcError):
    """Bytes do not match their recorded hash, or a file is corrupt."""

    exit_code = EXIT_INTEGRITY


class CorruptFileError(IntegrityError):
    """A weight file cannot be parsed (truncated, bad header)."""


class SchemaError(IntegrityError):
    """A pointer or manifest is malformed or from a newer mvc."""


class InterruptedError_(MvcError):
    """The user interrupted the command (Ctrl-C)."""

    exit_code = EXIT_INTERRUPTED


EXIT_CODES: dict[str, int] = {
    "ok": EXIT_OK,
    "other": EXIT_OTHER,
    "usage": EXIT_USAGE,
    "not_found": EXIT_NOT_FOUND,
    "conflict": EXIT_CONFLICT,
    "remote": EXIT_REMOTE,
    "integrity": EXIT_INTEGRITY,
    "interrupted": EXIT_INTERRUPTED,
}
