// Gloo's transport types, by name only: c10d holds them through smart pointers. See README.md.
#pragma once

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

}  // namespace transport
}  // namespace gloo
