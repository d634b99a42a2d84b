/// @file
/// A MoE / HyperMoE layer built twice with the same parameter values: whole (one process)
/// and with its experts sharded over a Parallel layout. How the expert-parallel layer is
/// checked against one process on the whole batch (tests/models/dist and
/// `hmoe selftest --dist`).
#pragma once

#include <cstdint>
#include <memory>

#include "models/hypermoe/ffn.h"

namespace hmoe::model {

/// A MoEFFN, or a HyperMoEFFN (MoE layer 1 of 2, with the hypernetwork it registers as
/// "hyper"), for cfg, its initial values drawn from Generator(seed) (the same values
/// whatever par shards: each rank's expert rows of the whole layer's).
std::shared_ptr<MoEFFN> make_ffn_layer(const ModelConfig& cfg, bool hyper, const nn::Parallel& par, uint64_t seed);

/// Gives whole fresh random values (normal, std 1 for the router, 0.3 elsewhere; a zero
/// router routes trivially), the same on every rank for a seed, and sharded the same
/// values (its rows of the sharded ones). forced: the router sends every token whose
/// feature 0 is positive to expert 0, so the other experts (and ranks) receive nothing.
/// Both layers were made by make_ffn_layer from one config, on the CPU, in one dtype.
void set_random_parameters(const MoEFFN& whole, const MoEFFN& sharded, bool forced, uint64_t seed);

}  // namespace hmoe::model
