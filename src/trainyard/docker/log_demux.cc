#include "trainyard/docker/log_demux.h"

#include <algorithm>
#include <string>

namespace trainyard::docker {

Status LogDemuxer::Feed(std::string_view data) {
  if (failed_) return InvalidArgument("docker log stream: input after a malformed frame header");
  while (!data.empty()) {
    if (remaining_ > 0) {
      size_t n = std::min<size_t>(remaining_, data.size());
      sink_(stream_, data.substr(0, n));
      remaining_ -= static_cast<std::uint32_t>(n);
      data.remove_prefix(n);
      continue;
    }
    size_t n = std::min<size_t>(sizeof(header_) - static_cast<size_t>(header_len_), data.size());
    std::copy_n(data.data(), n, header_ + header_len_);
    header_len_ += static_cast<int>(n);
    data.remove_prefix(n);
    if (header_len_ < static_cast<int>(sizeof(header_))) break;
    header_len_ = 0;
    if (header_[0] > 2 || header_[1] != 0 || header_[2] != 0 || header_[3] != 0) {
      failed_ = true;
      return InvalidArgument("docker log stream: malformed frame header (type byte " +
                             std::to_string(header_[0]) +
                             "); was the container created with a TTY?");
    }
    stream_ = static_cast<Stream>(header_[0]);
    remaining_ = (std::uint32_t{header_[4]} << 24) | (std::uint32_t{header_[5]} << 16) |
                 (std::uint32_t{header_[6]} << 8) | std::uint32_t{header_[7]};
  }
  return Status::Ok();
}

}  // namespace trainyard::docker
