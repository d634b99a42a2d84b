/// @file
/// The umbrella header of the hmoe engine (installed as <hmoe/hmoe.h>): everything a
/// program embedding the engine uses, and nothing of the backends' kernel contracts
/// (ops/*_kernels.h, ops/dispatch.h) or the device runtime.
#pragma once

// Tensors and autograd: Tensor (views, to(dtype / device), from_blob over your own
// memory), DType, Device, the Philox Generator; NoGradGuard, backward, gradcheck; the
// CPU thread pool's size (set_num_threads).
#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "engine/dtype.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "engine/thread_pool.h"

// Ops (differentiable, CPU and CUDA): factories (zeros, normal, from_vector), elementwise,
// indexing, matmul / linear, reductions, sort, views, and the nn functions (layer_norm,
// softmax, cross_entropy, causal_attention, dropout); the fused optimiser updates.
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"
#include "ops/optim.h"
#include "ops/reduce.h"
#include "ops/sort.h"
#include "ops/view.h"

// MoE ops: the router, the plan / permute / combine of tokens, the grouped GEMM and
// FFN over experts, HyperMoE's pattern-grouped adapter.
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"

// Modules: nn::Module (named parameters, a shared submodule listed once, train / eval,
// to(device / dtype)), nn::StateDict (state_dict / load_state_dict), ModuleList and
// Sequential, and the standard layers (Linear, Embedding, LayerNorm, RMSNorm, MLP).
#include "models/nn/containers.h"
#include "models/nn/layers.h"
#include "models/nn/module.h"
#include "models/nn/state_dict.h"

// Layers and models: the FFN layers (DenseFFN, MoEFFN, HyperMoEFFN with its
// HyperNetwork) built from model::FfnOptions on their own; the language model and its
// ModelConfig, with model::preset("tiny" | "small" | "base").
#include "models/hypermoe/config.h"
#include "models/hypermoe/ffn.h"
#include "models/hypermoe/layer_options.h"
#include "models/hypermoe/lm.h"

// Inference: infer::Model (a checkpoint loaded once, shared by threads), infer::Session
// (one batch's key/value cache: prefill, decode steps), sampling options and
// infer::generate for a batch of requests.
#include "models/infer/generate.h"

// Optimisers: SGD and AdamW over parameter groups (a learning-rate scale and weight
// decay each), state_dict / save / load of their state; the warm-up cosine schedule and
// global-norm clipping.
#include "models/optim/optimizer.h"

// Profiling and files: Profiler / ProfileScope (per-op time, FLOPs, bytes, memory; a
// Chrome trace), safetensors load and save.
#include "engine/io/safetensors.h"
#include "engine/profiler.h"

/// @namespace hmoe
/// The engine: Tensor, DType, Device, Generator, Error, the profiler, and every op as a
/// free function over tensors (zeros, matmul, softmax, ...).
/// @namespace hmoe::autograd
/// The autograd mechanism: graph nodes, the backward engine, grad mode and gradcheck.
/// @namespace hmoe::moe
/// The Mixture-of-Experts ops: routers, the plan / permute / combine of tokens, the
/// grouped GEMM and FFN over experts, HyperMoE's adapter.
/// @namespace hmoe::nn
/// Modules: nn::Module, the state dict, containers and the standard layers.
/// @namespace hmoe::model
/// The FFN layers (dense, MoE, HyperMoE), their options, and the HyperMoE language model
/// with its configuration and presets.
/// @namespace hmoe::optim
/// Optimisers (SGD, AdamW) over parameter groups, the learning-rate schedule, clipping.
/// @namespace hmoe::infer
/// Inference with a key/value cache: a loaded model, sessions, sampling, generation.
/// @namespace hmoe::train
/// Training: its configuration, checkpoints, the trainer, evaluation and metrics.
/// @namespace hmoe::data
/// Training data: byte-level text datasets and the window sampler.
/// @namespace hmoe::io
/// Files: safetensors reading and writing, atomic writes.
