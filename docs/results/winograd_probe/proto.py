"""Throwaway: Winograd F(2x2,3x3) via bmm vs oneDNN direct conv, bf16, channels_last, fwd+bwd."""
import sys, time, torch
import torch.nn.functional as F
torch.manual_seed(0)

def bt(d0, d1, d2, d3):
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3

def winograd_conv(x, w):
    # x: (B, C, H, W) any layout; w: (O, C, 3, 3); stride 1 pad 1, H, W even
    B, C, H, W = x.shape
    nh, nw = H // 2, W // 2
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C)
    d = [[xp[:, i:i + 2 * nh:2, j:j + 2 * nw:2, :] for j in range(4)] for i in range(4)]
    rows = [bt(d[0][j], d[1][j], d[2][j], d[3][j]) for j in range(4)]  # rows[j][i']
    v = []
    for i in range(4):
        v.extend(bt(rows[0][i], rows[1][i], rows[2][i], rows[3][i]))
    V = torch.stack(v).reshape(16, B * nh * nw, C)
    g = w.permute(2, 3, 1, 0)  # (3,3,C,O)
    Gm = torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=w.dtype)
    U = torch.einsum('ai,ijco,bj->abco', Gm, g, Gm).reshape(16, C, -1)
    M = torch.bmm(V, U.to(V.dtype)).reshape(4, 4, B, nh, nw, -1)
    # A^T M A, A^T = [[1,1,1,0],[0,1,-1,-1]]
    r0 = M[0] + M[1] + M[2]; r1 = M[1] - M[2] - M[3]
    y00 = r0[0] + r0[1] + r0[2]; y01 = r0[1] - r0[2] - r0[3]
    y10 = r1[0] + r1[1] + r1[2]; y11 = r1[1] - r1[2] - r1[3]
    y = torch.stack([torch.stack([y00, y01], 3), torch.stack([y10, y11], 3)], 2)  # B,nh,2,nw,2,O
    return y.reshape(B, H, W, -1).permute(0, 3, 1, 2)

def direct(x, w):
    return F.conv2d(x, w, padding=1)

def check():
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64); w = torch.randn(5, 8, 3, 3, dtype=torch.float64)
    print('max err f64', (winograd_conv(x, w) - direct(x, w)).abs().max().item())
    x = torch.randn(8, 64, 16, 16); w = torch.randn(32, 64, 3, 3) * 0.06
    with torch.autocast('cpu', torch.bfloat16):
        a = winograd_conv(x, w).float(); b = direct(x, w).float()
    ref = direct(x.double(), w.double()).float()
    print('bf16 rel err wino', ((a - ref).norm() / ref.norm()).item(), 'direct', ((b - ref).norm() / ref.norm()).item())

def bench(B, C, O, H, rounds=3, steps=5):
    x0 = torch.randn(B, C, H, H).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(O, C, 3, 3) * (2 / (9 * C)) ** .5).requires_grad_()
    res = {}
    for r in range(rounds):
        for name, fn in (('direct', direct), ('wino', winograd_conv)):
            x = x0.clone().requires_grad_()
            def step():
                with torch.autocast('cpu', torch.bfloat16):
                    y = fn(x, w)
                y.float().square().mean().backward()
            step()
            t = time.perf_counter()
            for _ in range(steps):
                step()
            res.setdefault(name, []).append((time.perf_counter() - t) / steps * 1e3)
    print(f'B{B} {C}->{O} {H}x{H}:', {k: [round(v, 1) for v in vs] for k, vs in res.items()}, flush=True)

check()
torch.set_num_threads(2)
bench(128, 384, 128, 16)   # four_blocks block 2 concat
bench(128, 384, 128, 8)
bench(512, 512, 256, 14)   # fast94 256->256 K=2 concat (14 ~ 15)
bench(512, 128, 64, 32)    # fast94 64->64 K=2 at 31 ~ 32
