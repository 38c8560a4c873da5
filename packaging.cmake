# Install rules and CPack (.deb) for kiln; included from the top CMakeLists.txt.
