// Schemas whose every value is finite (strings have maxLength, arrays maxItems, recursion stops at
// the nesting limit), so random generation must end; shared by the generation tests.
#pragma once

#include <string>
#include <vector>

namespace lathe::test {

inline std::vector<std::string> finite_schemas() {
  return {
      R"({"type":"object","properties":{"name":{"type":"string","minLength":2,"maxLength":8},
        "age":{"type":"integer","minimum":-5,"maximum":300},"score":{"type":"number","exclusiveMinimum":0,"maximum":1.5},
        "ok":{"type":"boolean"},"nothing":{"type":"null"},"color":{"enum":["red","green",3,{"a":[1,2]}]},
        "kind":{"const":"user"},"tags":{"type":"array","items":{"type":"integer","minimum":0,"maximum":99},"minItems":1,"maxItems":3},
        "nick":{"anyOf":[{"type":"string","maxLength":5},{"type":"null"}]},
        "inner":{"type":"object","properties":{"x":{"type":"number","minimum":-1,"maximum":1},"y":{"type":"string","maxLength":3}},"required":["y"]}},
        "required":["name","age","tags","inner"]})",
      R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer","minimum":0,"maximum":9},
        "next":{"$ref":"#/$defs/node"}},"required":["v"]}},"$ref":"#/$defs/node"})",
      R"({"type":"integer","minimum":100,"maximum":150})",
      R"({"type":"number","minimum":-0.001,"maximum":0.002})",
      R"({"type":"number","exclusiveMinimum":1e-20,"exclusiveMaximum":3})",
      R"({"type":"string","minLength":3,"maxLength":6})",
      R"({"type":["string","null","integer"],"maxLength":4,"maximum":5,"minimum":-5})",
      R"({"type":"array","items":{"type":"array","items":{"enum":[true,false,null,"\u00e9\n"]},"maxItems":2},"maxItems":3})",
      R"({"type":"object","properties":{"id":{"type":"integer","minimum":0,"maximum":1000},"identifier":{"type":"string","maxLength":4},
        "identity":{"type":"boolean"}},"required":["identity"],"definitions":{}})",
      R"({"title":"Answer","type":"object","properties":{"answer":{"title":"Answer","type":"string","maxLength":12},
        "confidence":{"anyOf":[{"type":"number","minimum":0,"maximum":1},{"type":"null"}],"default":null}},"required":["answer"]})",
  };
}

}  // namespace lathe::test
