# node-gyp build of the SO_ORIGINAL_DST addon (runtime/interception/original-dst.ts loads it).
# Built by native/build.ts (npm's postinstall, or `npm run build:native`) against the
# headers of the Node in node_modules, offline; out: native/build/Release/original_dst.node.
{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["original_dst.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
