import time, torch
V = torch.randn(16, 8192, 384, dtype=torch.bfloat16); U = torch.randn(16, 384, 128, dtype=torch.bfloat16)
for _ in range(2):
    t = time.perf_counter(); 
    for _ in range(5): torch.bmm(V, U)
    dt = (time.perf_counter() - t) / 5
    print('bmm ms', dt * 1e3, 'GMAC/s', 16 * 8192 * 384 * 128 / dt / 1e9)
x = torch.randn(128, 384, 16, 16).contiguous(memory_format=torch.channels_last).bfloat16(); w = torch.randn(128, 384, 3, 3).bfloat16().contiguous(memory_format=torch.channels_last)
for _ in range(2):
    t = time.perf_counter()
    for _ in range(5): torch.nn.functional.conv2d(x, w, padding=1)
    dt = (time.perf_counter() - t) / 5
    print('conv ms', dt * 1e3, 'GMAC/s', 128 * 256 * 384 * 128 * 9 / dt / 1e9)
