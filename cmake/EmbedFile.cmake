# cmake -DINPUT=file -DOUTPUT=file.cpp -P EmbedFile.cmake: the bytes of INPUT as the function
# lathe::server::webui_html() (server/webui.hpp) returns them.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp" "// Generated from ${INPUT} by cmake/EmbedFile.cmake: do not edit.
#include \"server/webui.hpp\"

namespace lathe::server {
namespace {
const unsigned char kPage[] = {
${bytes}0};
}  // namespace

std::string_view webui_html() { return {reinterpret_cast<const char*>(kPage), ${size}}; }

}  // namespace lathe::server
")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
