"""Throwaway: per-image training-step cost of the fast94 network vs airbench94's network, whole step and
3x3 convolutions alone, alternated in one process (bf16 autocast, channels_last, keep_freed_memory)."""
import sys, time, statistics, importlib.util, torch
import torch.nn.functional as F
sys.argv = [sys.argv[0], "optimizer.ns_dtype=bfloat16"]
exec(open("/tmp/prof/step.py").read().split("for _ in range(3)")[0])   # builds `net` (fast94, fitted stem), x (512)
spec = importlib.util.spec_from_file_location("ab", "/tmp/airbench_cpu/airbench94_muon_cpu.py")
ab = importlib.util.module_from_spec(spec); spec.loader.exec_module(ab)
torch.manual_seed(0)
abnet = ab.CifarNet().to(memory_format=torch.channels_last)
abnet.init_whiten(imgs[:5000].contiguous())
def whole(model, batch):
    xb = imgs[:batch].contiguous().to(memory_format=torch.channels_last); yb = torch.randint(0, 10, (batch,))
    def f():
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(model(xb).float(), yb)
        loss.backward()
    return f
def convs(shapes, batch):
    ts = [(torch.randn(batch, ci, h, h).bfloat16().to(memory_format=torch.channels_last).requires_grad_(),
           torch.randn(co, ci, 3, 3, requires_grad=True)) for ci, co, h in shapes]
    def f():
        for xi, wi in ts:
            with torch.autocast("cpu", torch.bfloat16):
                y = F.conv2d(xi, wi, padding=1)
            y.backward(torch.ones_like(y))
    return f
OURS = [(48, 64, 31), (128, 64, 15), (128, 256, 15), (512, 256, 7), (512, 256, 7), (512, 256, 3)]
AIRB = [(24, 64, 31), (64, 64, 15), (64, 256, 15), (256, 256, 7), (256, 256, 7), (256, 256, 3)]
cases = {"fast94 step (b512)": (whole(net, 512), 512), "fast94 3x3 convs (b512)": (convs(OURS, 512), 512),
         "airbench94 step (b2000)": (whole(abnet, 2000), 2000), "airbench94 step (b512)": (whole(abnet, 512), 512),
         "airbench94 3x3 convs (b512)": (convs(AIRB, 512), 512)}
res = {k: [] for k in cases}
for rnd in range(2):
    for k, (f, b) in cases.items():
        for _ in range(2): f()
        for _ in range(4):
            t = time.perf_counter(); f(); res[k].append((time.perf_counter() - t) / b * 50000)
for k, v in res.items():
    print(f"{k:32s} s per 50,000 images: median {statistics.median(v):6.1f}  (min {min(v):.1f}, max {max(v):.1f})")
