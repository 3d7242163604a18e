// The web chat page served at GET / (src/server/webui/index.html, embedded into the binary at
// build time by cmake/EmbedFile.cmake: it works without internet and without the source tree).
#pragma once

#include <string_view>

namespace lathe::server {

std::string_view webui_html();

}  // namespace lathe::server
