"""QLSTM / QGRU / QRNN: the recurrent layers with every gate GEMM in the format.

Per layer and direction, the input GEMM ``x W_ih^T`` runs once over all time steps and the
hidden GEMM ``h W_hh^T`` once per step, each as a QLinear GEMM triple (weight operand "W",
input "A", error "E"); the gate non-linearities and the element-wise products of the cell
(c * f, i * g, r * n, ...) stay fp32 element-wise ops, like a norm layer's. Same parameters and
state_dict as the torch module; torch's fused cuDNN / MKL-DNN kernels are not used (they would
multiply fp32 operands).
"""
from __future__ import annotations

import torch
from torch import nn

from lowbit.nn.attention import qlinear
from lowbit.nn.layers import pop_spec_kwargs
from lowbit.nn.spec import LayerSpec


def _lstm_cell(gx, h, c, w_hh, b_hh, spec):
    gates = gx + qlinear(h, w_hh, b_hh, spec)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(gx, h, w_hh, b_hh, spec):
    gh = qlinear(h, w_hh, b_hh, spec)
    xr, xz, xn = gx.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


class _QRecurrent:
    spec: LayerSpec

    fmt = property(lambda self: self.spec.fmt)
    backend = property(lambda self: self.spec.backend)

    def _check(self):
        if getattr(self, "proj_size", 0):
            raise ValueError("LSTM with proj_size is not supported by the quantized LSTM; keep it fp32 "
                             "(convert(..., overrides={name: None}))")

    @classmethod
    def from_rnn(cls, rnn: nn.RNNBase, fmt, backend="software", **spec_kwargs):
        kwargs = dict(num_layers=rnn.num_layers, bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout,
                      bidirectional=rnn.bidirectional)
        if rnn.mode.startswith("RNN_"):
            kwargs["nonlinearity"] = rnn.nonlinearity
        if getattr(rnn, "proj_size", 0):
            kwargs["proj_size"] = rnn.proj_size
        q = cls(rnn.input_size, rnn.hidden_size, device="meta", fmt=fmt, backend=backend, **kwargs, **spec_kwargs)
        for name in rnn._flat_weights_names:
            setattr(q, name, getattr(rnn, name))
        q._init_flat_weights()
        q.train(rnn.training)
        return q

    def forward(self, x, hx=None):
        self.spec.training = self.training
        batched = x.dim() == 3
        x = x if batched else x.unsqueeze(1)
        x = x.transpose(0, 1) if self.batch_first and batched else x  # [T, N, F]
        dirs = 2 if self.bidirectional else 1
        lstm = self.mode == "LSTM"
        h0, c0 = self._initial(x, hx, dirs, batched, lstm)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                out, h, c = self._run_direction(x, layer, d, h0[k], None if c0 is None else c0[k])
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout)
        out = x.transpose(0, 1) if self.batch_first and batched else x
        h_n = torch.stack(h_n)
        state = (h_n, torch.stack(c_n)) if lstm else h_n
        if not batched:
            out = out.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if lstm else state.squeeze(1)
        return out, state

    def _initial(self, x, hx, dirs, batched, lstm):
        shape = (self.num_layers * dirs, x.shape[1], self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(shape)
            return zeros, (zeros if lstm else None)
        h0, c0 = hx if lstm else (hx, None)
        if not batched:
            h0, c0 = h0.unsqueeze(1), (None if c0 is None else c0.unsqueeze(1))
        return h0, c0

    def _run_direction(self, x, layer, d, h, c):
        suffix = f"_l{layer}" + ("_reverse" if d else "")
        w_ih, w_hh = getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)
        b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
        b_hh = getattr(self, "bias_hh" + suffix) if self.bias else None
        gx = qlinear(x, w_ih, b_ih, self.spec)  # every time step in one GEMM
        steps = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
        outs = [None] * x.shape[0]
        for t in steps:
            if self.mode == "LSTM":
                h, c = _lstm_cell(gx[t], h, c, w_hh, b_hh, self.spec)
            elif self.mode == "GRU":
                h = _gru_cell(gx[t], h, w_hh, b_hh, self.spec)
            else:
                pre = gx[t] + qlinear(h, w_hh, b_hh, self.spec)
                h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
            outs[t] = h
        return torch.stack(outs), h, c

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fmt={self.spec.describe()}, backend={self.spec.backend.name}"


def _init(torch_cls):
    def __init__(self, *args, fmt="mls:2,1", backend="software", **kwargs):
        spec_kwargs = pop_spec_kwargs(kwargs)
        torch_cls.__init__(self, *args, **kwargs)
        self.spec = LayerSpec.make(fmt, backend, **spec_kwargs)
        self._check()
    return __init__


class QLSTM(_QRecurrent, nn.LSTM):
    __init__ = _init(nn.LSTM)


class QGRU(_QRecurrent, nn.GRU):
    __init__ = _init(nn.GRU)


class QRNN(_QRecurrent, nn.RNN):
    __init__ = _init(nn.RNN)
