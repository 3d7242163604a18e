// The Python of the torch-based test peers (PEFT, SAELens), which the README's setup does not
// install: their oracle tests skip, saying why, where none is found.
#pragma once

#include <string>

namespace lathe::test {

// The interpreter `env_var` names, else <source>/.venv-peft/bin/python where it exists, else "".
std::string torch_peer_python(const char* env_var);

}  // namespace lathe::test
