"""Patch cifar_lit.block with candidate forms; import before building the network."""
import os, torch
import torch.nn.functional as F
from cifar_lit import block as B

def mix_concat_cat(x, a, weight, bias):
    k = a.shape[1]
    c_out = weight.shape[0] // k
    a_x = a.to(x.dtype)
    scaled = torch.cat([x * a_x[:, i, None, None, None] for i in range(k)], dim=1)
    stacked_in = weight.unflatten(0, (k, c_out)).transpose(0, 1).flatten(1, 2)
    y = F.conv2d(scaled, stacked_in, padding=1)
    return y.add_((a.to(bias.dtype) @ bias.view(k, c_out))[:, :, None, None])

def forward_inplace(self, x):
    a = self.branch_weights(x)
    mixed = B._MIXERS[self.form](x, a, self.branch_weight, self.branch_bias)
    return F.relu(self.norm(mixed.add_(self.skip(x))))

v = os.environ.get("VARIANT", "")
if "cat" in v:
    B._MIXERS["concat"] = mix_concat_cat
if "inplace" in v:
    B.Block.forward = forward_inplace

def forward_ablate(self, x):
    """Cost attribution only (not the block's math): optionally no conv bias, optionally pool before BN."""
    a = self.branch_weights(x)
    k = a.shape[1]; c_out = self.branch_weight.shape[0] // k
    mixed = B._MIXERS[self.form](x, a, self.branch_weight, self.branch_bias * (0 if "nobias" in v else 1))
    z = mixed + self.skip(x)
    if getattr(self, "pool_inside", False):
        z = F.max_pool2d(z, 2)
    return F.relu(self.norm(z))

def mix_concat_nobias(x, a, weight, bias):
    k = a.shape[1]; c_out = weight.shape[0] // k
    nhwc = x.permute(0, 2, 3, 1).unsqueeze(3) * a[:, None, None, :, None].to(x.dtype)
    scaled = nhwc.flatten(3, 4).permute(0, 3, 1, 2)
    stacked_in = weight.unflatten(0, (k, c_out)).transpose(0, 1).flatten(1, 2)
    return F.conv2d(scaled, stacked_in, padding=1)

if "nobias" in v:
    B._MIXERS["concat"] = mix_concat_nobias
if "poolfirst" in v:
    B.Block.forward = forward_ablate
    _orig_init = None
    import cifar_lit.network as N
    _orig = N.BlockNetwork.__init__
    def _init(self, *args, **kw):
        _orig(self, *args, **kw)
        layers = list(self.backbone)
        for i, m in enumerate(layers):
            if isinstance(m, torch.nn.MaxPool2d):
                layers[i - 1].pool_inside = True
                layers[i] = torch.nn.Identity()
        self.backbone = torch.nn.Sequential(*layers)
    N.BlockNetwork.__init__ = _init
