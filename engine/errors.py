"""Errors a user can cause. The CLI prints them as one ``error:`` line; the UI shows them as a message."""


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what to do instead."""


class DatasetError(UserError):
    """A dataset spec names nothing loadable: unknown name, missing files, no readable image."""


class ConfigError(UserError):
    """A method or run parameter is out of range or unknown."""


class TrainingError(Exception):
    """Training stopped for a reason that is not a bug: NaN loss, collapse, out of memory."""


class LossDiverged(TrainingError):
    """A loss became NaN or infinite: training cannot go on with these settings."""


class RunCancelled(Exception):
    """Raised inside a method when the user cancelled its run; the job thread records ``cancelled``."""


class DiskFullError(UserError):
    """A write failed because the disk (or the user's quota) is full; the earlier file, if any, is unchanged."""


class NotFittedError(UserError, ValueError, AttributeError):
    """A model's results or assignments were asked for before ``fit``. Its bases are those of scikit-learn's
    ``NotFittedError``, so code written against that contract catches it too."""
