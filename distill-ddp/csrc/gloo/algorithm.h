// Gloo's algorithm base class is not needed by the declarations the shim uses; see README.md.
#pragma once
