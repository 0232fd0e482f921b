"""Channels-last (NDHWC) against contiguous (NCDHW) 3D tensors on a CPU: what ``memory_format: auto``
chooses there (``trainer.memory_format`` of the U-Net, ``train.memory_format`` of the DDPM), and the
sliding window's batch of windows (``inference.sw_batch_size``).

Rows, each timed both ways in the same run (interleaved repeats, medians):

* a U-Net training step (forward, Dice loss, backward, SGD) of the demo's network (8/16/32
  channels, 32^3 patches, batch 2) and of the ``cpu`` preset's (8/16/32/64, 48^3), one thread as in
  the demo, where the two folds train at once;
* a DDPM training step of the demo's ``tiny`` network (8/16/16, 16x32x32 patches, batch 2), and its
  noise estimate of two windows (what harmonization runs), one thread;
* sliding-window inference of the demo's U-Net over a 70x60x100 volume (the demo's femur boxes at
  1.7 mm) on every core: 1 window at a time (the presets before) and 4, each contiguous and
  channels-last; and 4 windows on one thread, as each of the study's predict workers runs them.

Usage::

    .venv/bin/python benchmarks/bench_memory_format.py [--repeats 5] [--steps 20]

Prints a markdown table: ms per call each way and the ratio channels-last / contiguous.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each row (median)")
    parser.add_argument("--steps", type=int, default=20, help="calls timed per repeat")
    args = parser.parse_args()

    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceLoss
    from monai.networks.nets import DiffusionModelUNet, UNet

    from metsynth.devices import to_memory_format

    cores = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)

    def unet(channels):
        torch.manual_seed(0)
        return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=channels,
                    strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")

    def ddpm():
        torch.manual_seed(0)
        return DiffusionModelUNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(8, 16, 16),
                                  attention_levels=(False, False, False), num_head_channels=(0, 0, 16),
                                  num_res_blocks=1, norm_num_groups=8)

    def training_step(base, x, optimizer, loss):
        """A builder of one optimizer step of a copy of ``base`` in either layout: ``loss(net, x)``."""
        def make(channels_last):
            net = to_memory_format(copy.deepcopy(base), channels_last)
            opt = optimizer(net.parameters())
            xi = to_memory_format(x, channels_last)

            def step():
                opt.zero_grad()
                loss(net, xi).backward()
                opt.step()
            return step
        return make

    def unet_step(channels, size):
        x = torch.randn((2, 1, size, size, size), generator=gen)
        y = (torch.rand((2, 1, size, size, size), generator=gen) > 0.9).float()
        dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        return training_step(unet(channels), x, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
                             lambda net, xi: dice(net(xi), y))

    def ddpm_step():
        x = torch.randn((2, 1, 16, 32, 32), generator=gen)
        t = torch.tensor([3, 7])
        return training_step(ddpm(), x, lambda p: torch.optim.Adam(p, lr=1e-3),
                             lambda net, xi: ((net(xi, timesteps=t) - x) ** 2).mean())

    def ddpm_predict():
        x = torch.randn((2, 1, 16, 32, 32), generator=gen)
        t = torch.tensor([5, 5])
        base = ddpm().eval()

        def make(channels_last):
            net = to_memory_format(copy.deepcopy(base), channels_last)
            xi = to_memory_format(x, channels_last)

            def call():
                with torch.no_grad():
                    net(xi, timesteps=t)
            return call
        return make

    def window(sw_batch):
        volume = torch.randn((1, 1, 70, 60, 100), generator=gen)
        base = unet((8, 16, 32)).eval()

        def make(channels_last):
            net = to_memory_format(copy.deepcopy(base), channels_last)

            def call():
                with torch.inference_mode():
                    sliding_window_inference(volume, (32, 32, 32), sw_batch,
                                             lambda w: net(to_memory_format(w, channels_last)), overlap=0.25,
                                             mode="gaussian")
            return call
        return make

    rows = [  # name, threads, builder, calls per repeat
        ("U-Net step, demo (8/16/32, 32^3, batch 2)", 1, unet_step((8, 16, 32), 32), args.steps),
        ("U-Net step, cpu preset (8/16/32/64, 48^3, batch 2)", 1, unet_step((8, 16, 32, 64), 48),
         max(2, args.steps // 4)),
        ("DDPM step, tiny (8/16/16, 16x32x32, batch 2)", 1, ddpm_step(), max(2, args.steps // 2)),
        ("DDPM noise estimate, 2 windows", 1, ddpm_predict(), args.steps),
        (f"sliding window 70x60x100, 1 window a pass ({cores} threads)", cores, window(1), max(2, args.steps // 4)),
        (f"sliding window 70x60x100, 4 windows a pass ({cores} threads)", cores, window(4), max(2, args.steps // 4)),
        ("sliding window 70x60x100, 4 windows a pass (1 thread: the study's predict workers)", 1, window(4),
         max(2, args.steps // 4)),
    ]
    results = []
    for name, threads, make, calls in rows:
        torch.set_num_threads(threads)
        funcs = {False: make(False), True: make(True)}
        for f in funcs.values():
            f()  # warm-up: oneDNN picks and caches its kernels
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.repeats):
            for layout in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                for _ in range(calls):
                    funcs[layout]()
                times[layout].append((time.perf_counter() - t0) / calls * 1e3)
        contiguous, channels_last = (statistics.median(times[k]) for k in (False, True))
        results.append((name, contiguous, channels_last))
        print(f"{name}: contiguous {contiguous:.1f} ms, channels-last {channels_last:.1f} ms", flush=True)
    torch.set_num_threads(cores)

    print("\n| call | contiguous (ms) | channels-last (ms) | channels-last / contiguous |")
    print("|---|---|---|---|")
    for name, contiguous, channels_last in results:
        print(f"| {name} | {contiguous:.1f} | {channels_last:.1f} | x{channels_last / contiguous:.2f} |")
    one = next(r for r in results if "1 window" in r[0])
    four = next(r for r in results if "4 windows" in r[0] and "1 thread" not in r[0])
    print(f"\nsliding window, 4 windows a pass / 1 (contiguous): x{four[1] / one[1]:.2f}; "
          f"4 windows channels-last / 1 window contiguous (the presets before): x{four[2] / one[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
