// "FILE" or "FILE:SCALE" on the command line (--control-vector, --lora): a file and the factor it
// is applied with.
#pragma once

#include <filesystem>
#include <string_view>

namespace lathe {

struct FileWithScale {
  std::filesystem::path path;
  float scale = 1.0f;
};

// A path may contain ':'; only a trailing ":<number>" (a finite decimal number such as 0.5, -2,
// +1e-1) is taken as the scale, 1 without one. InvalidArgumentError naming `flag` for an empty
// spec, an empty path before the scale, or a non-finite scale.
FileWithScale parse_file_with_scale(std::string_view spec, std::string_view flag);

}  // namespace lathe
