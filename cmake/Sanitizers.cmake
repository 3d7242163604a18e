if(LATHE_SANITIZE)
  # Applied to everything in the tree so that the library, tests and CLI agree on the runtime.
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
