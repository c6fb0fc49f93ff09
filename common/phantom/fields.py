"""Random smooth fields made by filtering white noise in Fourier space.

One complex inverse FFT yields two independent real fields (real and imaginary parts of filtered
complex white noise), which is how tissue texture, the smooth deformation of the anatomy, the
intermuscular fat pattern and the scanner's correlated noise all come cheaply at 512 x 512.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft


def _freq_grid(shape: tuple[int, int], pixel_mm: float) -> np.ndarray:
    """|f| in cycles/mm on the FFT grid, (H, W) float32."""
    fy = sfft.fftfreq(shape[0], d=pixel_mm).astype(np.float32)
    fx = sfft.fftfreq(shape[1], d=pixel_mm).astype(np.float32)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def field_pair(rng: np.random.Generator, transfer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent zero-mean unit-SD (H, W) float32 fields whose spectrum is ``transfer`` (real, even).

    Only frequencies where the transfer is not negligible get random coefficients, so smooth
    (low-pass) fields cost one inverse FFT and few random numbers. The coefficients are uniform
    rather than Gaussian (six times cheaper to draw); each pixel sums thousands of them, so the
    fields are Gaussian all the same.
    """
    shape = transfer.shape
    support = transfer > 1e-4 * float(transfer.max())
    n = int(np.count_nonzero(support))
    spectrum = np.zeros(shape, np.complex64)
    if n > transfer.size // 2:
        spectrum.real = rng.random(shape, dtype=np.float32)
        spectrum.imag = rng.random(shape, dtype=np.float32)
        spectrum -= np.complex64(0.5 + 0.5j)
        spectrum *= transfer
    else:
        coef = np.empty(n, np.complex64)
        coef.real = rng.random(n, dtype=np.float32)
        coef.imag = rng.random(n, dtype=np.float32)
        coef -= np.complex64(0.5 + 0.5j)
        spectrum[support] = coef * transfer[support]
    out = sfft.ifft2(spectrum, workers=1, overwrite_x=True)
    # Analytic SD of filtered complex white noise (each part): sqrt(sum |T|^2) / N.
    sd = float(np.sqrt(np.sum(np.square(transfer, dtype=np.float64)))) / transfer.size
    scale = np.float32(np.sqrt(12.0) / sd if sd > 0 else 1.0)  # uniform(-1/2, 1/2) has SD 1/sqrt(12)
    return out.real * scale, out.imag * scale


def gaussian_transfer(shape: tuple[int, int], pixel_mm: float, scale_mm: float) -> np.ndarray:
    """Low-pass transfer whose fields have a correlation length of about ``scale_mm``."""
    f = _freq_grid(shape, pixel_mm)
    return np.exp(-((np.pi * scale_mm * f) ** 2)).astype(np.float32)


def bandpass_transfer(shape: tuple[int, int], pixel_mm: float, scale_mm: float) -> np.ndarray:
    """Band-pass transfer peaking at 1/(2 scale_mm) cycles/mm: worm-like zero crossings (fat streaks)."""
    f = _freq_grid(shape, pixel_mm) * (2.0 * scale_mm)
    return (f * np.exp(-0.5 * (f**2 - 1.0))).astype(np.float32)


def ct_noise_transfer(shape: tuple[int, int], pixel_mm: float, grain_mm: float) -> np.ndarray:
    """Filtered-back-projection-like noise power spectrum (ramp x apodisation), as an amplitude.

    CT noise is not white: the ramp filter suppresses low frequencies and the reconstruction kernel
    cuts high ones, so the noise power peaks at mid frequencies; ``grain_mm`` sets where (soft
    kernels give coarse grain). A little low-frequency power keeps the blotchy look of real images.
    """
    f = _freq_grid(shape, pixel_mm)
    fc = 1.0 / (2.0 * grain_mm)
    nps = (f / fc + 0.08) * np.exp(-((f / fc) ** 2))
    return np.sqrt(nps).astype(np.float32)
