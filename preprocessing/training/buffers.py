"""The reused batch buffers of :class:`~preprocessing.training.loader.IrisLoader`, and how batches leave them.

* :class:`Slot`: one batch's four arrays, allocated once. Model-ready for the CPU
  device (float32 image, int64 label), or the wire format for another device (uint8
  image and label: 3.5 MB a sample instead of 6). Pinned for CUDA.
* :class:`Pool`: slots reused across batches; it allocates only when every slot is in
  use, and shrinks back to :data:`POOL_DEPTH` free slots.
* :class:`HostBatches` hands out tensors that view a slot; the slot returns to the
  pool once nothing refers to them. :class:`DeviceBatches` copies a slot to the
  device, widens the image and label there, and returns the slot once the copy is done.
"""

from __future__ import annotations

import math
import mmap
import threading
import weakref
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np
import torch

from preprocessing.augment import Sample
from preprocessing.shapes import HEIGHT, WIDTH
from preprocessing.training.items import IMAGE_TABLE

#: Slots of a normal loop: one being gathered, the batch handed out, the one before it
#: (still bound to the loop variable while the next is fetched). The pool keeps this
#: many when the caller lets go of more.
POOL_DEPTH = 3

#: (image, label) dtypes of a slot: model-ready for the CPU device, or the wire format.
READY = (np.float32, np.int64)
WIRE = (np.uint8, np.uint8)
_TORCH_DTYPES = {np.uint8: torch.uint8, np.int64: torch.int64, np.float32: torch.float32}


def slot_bytes(batch_size: int, channels: int, layout: tuple[type, type] = READY) -> int:
    """Bytes of one pool slot: ``B * H * W * (image + label + 4 + 4 * C)``."""
    image, label = (np.dtype(t).itemsize for t in layout)
    return batch_size * HEIGHT * WIDTH * (image + label + 4 + 4 * channels)


def _host_array(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised host array, in transparent huge pages where the OS offers them.

    A growing pool writes into fresh pages; measured here: 0.32 GB/s into fresh
    4 KiB pages, 4.6-6 GB/s into huge pages, so a new 393 MB slot costs 65-85 ms
    instead of 1.2 s (the first in a process can take a second while the kernel
    compacts memory).
    """
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype)
    buffer = mmap.mmap(-1, math.prod(shape) * np.dtype(dtype).itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, dtype).reshape(shape)


class Slot:
    """The buffers of one batch: image [B, 1, H, W], label [B, H, W], weights [B, H, W], dist [B, C, H, W]."""

    def __init__(self, batch_size: int, channels: int, layout: tuple[type, type], pinned: bool) -> None:
        shapes = ((batch_size, 1, HEIGHT, WIDTH), (batch_size, HEIGHT, WIDTH), (batch_size, HEIGHT, WIDTH))
        shapes += ((batch_size, channels, HEIGHT, WIDTH),)
        dtypes = (*layout, np.float32, np.float32)
        if pinned:  # page-locked, so that the copy to the GPU can be asynchronous
            self.tensors = [
                torch.empty(shape, dtype=_TORCH_DTYPES[dtype], pin_memory=True)
                for shape, dtype in zip(shapes, dtypes, strict=True)
            ]
            self.arrays = [tensor.numpy() for tensor in self.tensors]
        else:
            self.arrays = [_host_array(shape, dtype) for shape, dtype in zip(shapes, dtypes, strict=True)]
            self.tensors = [torch.from_numpy(array) for array in self.arrays]
        self.ready_image = self.arrays[0].dtype == np.float32
        self.copy_done: torch.cuda.Event | None = None  # CUDA: recorded after the copies out of this slot

    def write(self, j: int, sample: Sample) -> None:
        """Write one sample into row ``j``: one pass per array."""
        image, label, weights, dist = self.arrays
        if self.ready_image:
            cv2.LUT(sample.image, IMAGE_TABLE, dst=image[j, 0])
        else:
            np.copyto(image[j, 0], sample.image)
        np.copyto(label[j], sample.label)  # uint8 -> int64 on the CPU device
        np.copyto(weights[j], sample.spatial_weights)
        if sample.dist_map.strides[-1] < 0:  # a flip's mirrored view: cv2.flip copies at memcpy speed
            for out, channel in zip(dist[j], sample.dist_map[..., ::-1], strict=True):
                cv2.flip(channel, 1, dst=out)
        else:
            np.copyto(dist[j], sample.dist_map)


class Pool:
    """Slots reused across batches; it allocates only when every slot is in use, and keeps ``keep`` free ones."""

    def __init__(self, make: Callable[[], Slot], keep: int = POOL_DEPTH) -> None:
        self._make, self._keep = make, keep
        self._free: list[Slot] = []
        self._copying: deque[Slot] = deque()  # CUDA: handed to the device, copy maybe not finished
        self._lock = threading.RLock()  # a finalizer may give a slot back from any thread
        self.allocated = 0  #: slots alive: free, being gathered, held by the caller or being copied
        self.peak = 0  #: most slots alive at once

    def take(self) -> Slot:
        with self._lock:
            while self._copying and self._copying[0].copy_done.query():
                self._free.append(self._copying.popleft())
            if self._free:
                return self._free.pop()
            if self._copying:  # wait for the oldest copy rather than allocate
                slot = self._copying.popleft()
            else:
                slot = None
                self.allocated += 1
                self.peak = max(self.peak, self.allocated)
        if slot is not None:
            slot.copy_done.synchronize()
            return slot
        try:
            return self._make()
        except BaseException:
            with self._lock:
                self.allocated -= 1
            raise

    def give_back(self, slot: Slot) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(slot)
            else:  # the caller let go of batches it had kept: shrink back
                self.allocated -= 1

    def give_back_after_copy(self, slot: Slot) -> None:
        with self._lock:
            self._copying.append(slot)


def lease(slot: Slot, n: int, pool: Pool) -> list[torch.Tensor]:
    """Tensors viewing the first ``n`` rows of the slot; it goes back to the pool once all are gone.

    ``torch.from_numpy(view)`` keeps the exact ndarray object ``view`` alive for as long
    as any tensor or view shares its storage, so its finalizer says when that ends.
    """
    remaining = [len(slot.arrays)]
    lock = threading.Lock()

    def dropped() -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            pool.give_back(slot)

    tensors = []
    for array in slot.arrays:
        view = array[:n]
        weakref.finalize(view, dropped).atexit = False
        tensors.append(torch.from_numpy(view))
    return tensors


class HostBatches:
    """Batches handed out as views of host slots: the CPU device (model-ready), or the wire format."""

    def __init__(self, layout: tuple[type, type] = READY) -> None:
        self.layout, self.pinned = layout, False

    def hand_out(self, slot: Slot, n: int, pool: Pool) -> list[torch.Tensor]:
        return lease(slot, n, pool)


class DeviceBatches:
    """Wire-format slots copied to ``device`` and widened there: the image through the table, the label to int64."""

    layout = WIRE

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._table = torch.from_numpy(IMAGE_TABLE.copy()).to(device)

    def hand_out(self, slot: Slot, n: int, pool: Pool) -> list[torch.Tensor]:
        image, label, weights, dist = (
            tensor[:n].to(self.device, non_blocking=self.pinned, copy=True) for tensor in slot.tensors
        )
        if self.pinned:
            slot.copy_done = torch.cuda.Event()
            slot.copy_done.record(torch.cuda.current_stream(self.device))  # the copies' stream, after them
            pool.give_back_after_copy(slot)
        else:  # the copy has finished
            pool.give_back(slot)
        return [self._table[image.int()], label.long(), weights, dist]
