"""Type stub for the Cython kernel (``_ctc_cy.pyx``); mirrors ``_ctc_py.py``."""
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import TypeAlias

BeamTuple: TypeAlias = tuple[list[int], float, list[float] | None]

def scan(probs: object, num_classes: int) -> int: ...
def greedy(p: npt.NDArray[np.float32], blank: int, is_log: bool) -> list[int]: ...
def greedy_text(p: npt.NDArray[np.float32], blank: int, symbols: tuple[str, ...]) -> str: ...
def greedy_chars(p: npt.NDArray[np.float32], alphabet: str) -> str: ...
def greedy_detail(
    p: npt.NDArray[np.float32], blank: int, is_log: bool
) -> tuple[list[int], list[float], float]: ...
def greedy_batch(p: npt.NDArray[np.float32], blank: int, is_log: bool) -> list[list[int]]: ...
def greedy_detail_batch(
    p: npt.NDArray[np.float32], blank: int, is_log: bool
) -> list[tuple[list[int], list[float], float]]: ...
def beam(
    p: npt.NDArray[np.float32],
    blank: int,
    is_log: bool,
    beam_width: int,
    top_k: int,
    classes: Sequence[int] | None,
    min_length: int,
    max_length: int,
    threshold: float,
    want_conf: bool,
) -> list[BeamTuple]: ...
def beam_batch(
    p: npt.NDArray[np.float32],
    blank: int,
    is_log: bool,
    beam_width: int,
    top_k: int,
    classes: Sequence[int] | None,
    min_length: int,
    max_length: int,
    threshold: float,
    want_conf: bool,
) -> list[list[BeamTuple]]: ...
