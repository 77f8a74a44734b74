"""Throwaway: time fwd+bwd of the fast94 network at batch 512 (CPU, bf16 autocast, channels_last)."""
import sys, time, torch
from hydra import compose, initialize
from hydra.utils import instantiate
from cifar_lit.cli import keep_freed_memory
keep_freed_memory(True)
torch.manual_seed(0)
with initialize(version_base="1.3", config_path="../../work/main/conf"):
    cfg = compose(config_name="train", overrides=["experiment=fast94"] + [a for a in sys.argv[1:] if not a.startswith("--")])
import sys; sys.path.insert(0, "/tmp/prof"); import variant
from cifar_lit.network import BlockNetwork
from omegaconf import OmegaConf
from cifar_lit.cli import plain
m = plain(cfg.model)

net = BlockNetwork(**m).to(memory_format=torch.channels_last)
if net.stem is not None if hasattr(net, "stem") else False:
    pass
import numpy as np
d = np.load("/work/main/data/cache/cifar10-train-f6d2c44f70.npz")
k = [k for k in d.files if d[k].ndim == 4][0]
imgs = torch.from_numpy(d[k][:5000]).float()
if imgs.shape[-1] == 3: imgs = imgs.permute(0, 3, 1, 2)
imgs = (imgs - imgs.mean((0, 2, 3), keepdim=True)) / imgs.std((0, 2, 3), keepdim=True)
net.stem.fit(imgs.contiguous())
BS = int(__import__("os").environ.get("BS", 512))
x = imgs[:BS].contiguous().to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (BS,))
def step():
    with torch.autocast("cpu", torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
for _ in range(3): step()
ts = []
for _ in range(6):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print("ms/step", sorted(ts)[len(ts)//2] * 1000, [round(t*1000) for t in ts])
if "--prof" in sys.argv: pass
if "--prof" in sys.argv:
    from torch.profiler import profile
    with profile(record_shapes=True) as p:
        for _ in range(2): step()
    print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=45, max_name_column_width=40, max_shapes_column_width=70))
