// Training checkpoints: a run's whole state (adapters, AdamW moments, step, example orders) and
// the settings it was started with, in one safetensors file, so that a resumed run continues
// exactly (the same adapters, bit for bit, as a run that never stopped).
//
// Layout: tensors "lora.<p>.a" [rank, in] and "lora.<p>.b" [out, rank] (F32) per adapter pair,
// "adam.m.<i>" and "adam.v.<i>" (F32, 1-D) per optimizer tensor; __metadata__ "lathe.checkpoint"
// holds JSON: {"version": 1, "step", "rank", "alpha", "pairs": [{"layer", "target", "in", "out"}],
// "cycles": [{"order": [...], "at", "rng"}], "settings": {...}}. Written atomically (an existing
// checkpoint is replaced only by a complete one).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "train/finetune.hpp"

namespace lathe::train {

struct Checkpoint {
  TrainState state;
  nlohmann::json settings;  // what the run was started with (model, data, options): must match to resume
};

void write_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint);

// NotFoundError for a missing file; FormatError naming the file and the tensor or key for a file
// that is not a lathe checkpoint or is damaged (missing tensors, wrong sizes, non-finite values).
Checkpoint read_checkpoint(const std::filesystem::path& path);

// The settings keys whose values differ between a checkpoint and a new run ("steps: 100 -> 200"),
// empty when the run can resume.
std::vector<std::string> settings_differences(const nlohmann::json& saved, const nlohmann::json& now);

}  // namespace lathe::train
