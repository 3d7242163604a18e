#include "stats/alternative.hpp"

#include <fmt/format.h>

#include "lathe/error.hpp"

namespace lathe::stats {

std::string_view alternative_name(Alternative alternative) {
  switch (alternative) {
    case Alternative::TwoSided: return "two-sided";
    case Alternative::Less: return "less";
    case Alternative::Greater: return "greater";
  }
  return "?";
}

Alternative parse_alternative(std::string_view text) {
  for (Alternative a : {Alternative::TwoSided, Alternative::Less, Alternative::Greater})
    if (text == alternative_name(a)) return a;
  throw InvalidArgumentError(
      fmt::format("unknown alternative '{}': use two-sided, less or greater", text));
}

}  // namespace lathe::stats
