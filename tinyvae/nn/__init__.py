"""``tinyvae.nn``: modules, layers and initialisers for building models."""
from . import init, utils
from .activation import GELU, LeakyReLU, ReLU, SiLU, Sigmoid, Softplus, Tanh
from .layers import (AvgPool2d, Conv2d, ConvTranspose2d, Dropout, Embedding, Flatten, Linear, MaxPool2d,
                     Unflatten, Upsample)
from .made import MADE, MaskedLinear
from .module import Module, ModuleList, Parameter, Sequential
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .pixelcnn import GatedBlock, MaskedConv2d, PixelCNN
from .rnn import GRU, GRUCell
from .vq import VectorQuantizer, VQOutput

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "Linear", "Conv2d", "ConvTranspose2d",
           "Upsample", "AvgPool2d", "MaxPool2d", "Flatten", "Unflatten", "Embedding", "Dropout",
           "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GRUCell", "GRU", "ReLU", "LeakyReLU", "Tanh",
           "Sigmoid", "Softplus", "GELU", "SiLU", "VectorQuantizer", "VQOutput", "MaskedConv2d", "GatedBlock", "PixelCNN", "MADE", "MaskedLinear",
           "init",
           "utils"]
