// The alternative hypothesis of a test, named as scipy names it ('two-sided', 'less', 'greater'):
// 'less' asks whether the statistic is smaller than the null hypothesis expects, 'greater' larger.
#pragma once

#include <string_view>

namespace lathe::stats {

enum class Alternative { TwoSided, Less, Greater };

std::string_view alternative_name(Alternative alternative);

// "two-sided", "less" or "greater"; InvalidArgumentError naming `text` otherwise.
Alternative parse_alternative(std::string_view text);

}  // namespace lathe::stats
