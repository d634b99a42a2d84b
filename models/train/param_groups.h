/// @file
/// The model's parameters in AdamW groups: with and without weight decay, and the
/// hypernetwork in groups of its own, at train.hyper_lr_scale of the learning rate, when
/// that scale is not 1. One optimiser steps them all; a checkpoint stores its state as
/// "<group>.<parameter>.<what>" and each group's step count.
#pragma once

#include <memory>
#include <vector>

#include "models/nn/module.h"
#include "models/optim/optimizer.h"
#include "models/train/config.h"

namespace hmoe::train {

/// The groups decay, plain, hyper_decay, hyper_plain (those with parameters, in that
/// order), each parameter under its model name. Build after the model's last move or cast
/// (nn::Module::to).
std::vector<optim::ParamGroup> param_groups(const nn::Module& m, const OptimConfig& t);
/// AdamW over them with the config's learning rate, betas, eps and weight decay.
std::unique_ptr<optim::AdamW> make_optimizer(const nn::Module& m, const OptimConfig& t);

}  // namespace hmoe::train
