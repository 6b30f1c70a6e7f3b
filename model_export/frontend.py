"""The log-mel frontend as graph ops: waveform patch in, musicnn's float32 log-compressed mel out.

Built only from ops every execution provider implements (Conv, Mul, Add, MatMul, Log), not ONNX STFT/DFT:
the STFT is a strided Conv1d whose kernels are a Hann-windowed DFT basis, so the framing, windowing and
transform are one matrix product per frame.
"""

from __future__ import annotations

import math

import numpy as np

from model_export.graph import GraphBuilder

SAMPLE_RATE = 16_000  # Hz
N_FFT = 512  # samples per STFT frame
HOP_LENGTH = 256  # samples between frames
N_MELS = 96
F_MIN = 0.0  # Hz
F_MAX = SAMPLE_RATE / 2  # Hz
PATCH_FRAMES = 187  # frames per model input (≈ 3 s)
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP_LENGTH + N_FFT  # 48128: 256 samples of context on each side
LOG_SCALE = 10_000.0  # musicnn's "logC": log10(1 + LOG_SCALE * mel)
N_BINS = N_FFT // 2 + 1


def periodic_hann(length: int) -> np.ndarray:
    """scipy.signal.get_window('hann', length, fftbins=True), librosa's STFT window (float64)."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * n / length)


def windowed_dft_basis() -> np.ndarray:
    """[2·N_BINS, N_FFT] float64: rows are window·cos and window·(−sin) for bins 0..N_FFT/2 (real, then imaginary)."""
    n = np.arange(N_FFT)
    k = np.arange(N_BINS)[:, None]
    angle = 2.0 * math.pi * k * n / N_FFT
    window = periodic_hann(N_FFT)
    return np.concatenate([np.cos(angle) * window, -np.sin(angle) * window], axis=0)


def mel_filterbank() -> np.ndarray:
    """[N_MELS, N_BINS] float64, librosa's defaults: Slaney mel scale, Slaney area normalisation."""
    import librosa  # export-time only

    return librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=F_MIN, fmax=F_MAX, htk=False, norm="slaney", dtype=np.float64
    )


def log_mel(g: GraphBuilder, waveform: str, output: str) -> str:
    """[batch, PATCH_SAMPLES] waveform → [batch, PATCH_FRAMES, N_MELS] log10(1 + 10000·mel power), float32."""
    framed = g.op("Unsqueeze", waveform, g.ints("channel_axis", [1]))  # [batch, 1, samples]
    kernels = g.weight("frontend.dft_kernels", windowed_dft_basis()[:, None, :])  # [2·N_BINS, 1, N_FFT]
    spectrum = g.op("Conv", framed, kernels, strides=[HOP_LENGTH], kernel_shape=[N_FFT])  # [batch, 2·N_BINS, frames]
    axis = g.ints("bin_axis", [1])
    real = g.op("Slice", spectrum, g.ints("real_start", [0]), g.ints("real_end", [N_BINS]), axis)
    imag = g.op("Slice", spectrum, g.ints("imag_start", [N_BINS]), g.ints("imag_end", [2 * N_BINS]), axis)
    power = g.op("Add", g.op("Mul", real, real), g.op("Mul", imag, imag))  # [batch, N_BINS, frames]
    frames_first = g.op("Transpose", power, perm=[0, 2, 1])
    mel = g.op("MatMul", frames_first, g.weight("frontend.mel_basis", mel_filterbank().T))  # [batch, frames, N_MELS]
    compressed = g.op("Log", g.op("Add", g.op("Mul", mel, g.weight("log_scale", np.array(LOG_SCALE))),
                                  g.weight("one", np.array(1.0))))  # fmt: skip
    return g.op("Mul", compressed, g.weight("inverse_ln10", np.array(1.0 / math.log(10.0))), output=output)
