// Gloo's exception types are not needed by the declarations the shim uses; see README.md.
#pragma once
