// A stand-in for libFuzzer's main, so that the fuzz targets run as ordinary tests in builds
// without libFuzzer (GCC): it feeds LLVMFuzzerTestOneInput the seed corpus, every prefix of
// every seed (captures are cut anywhere), then deterministic pseudo-random inputs: random
// bytes, mutated seeds and spliced seeds.
//
//   <target>_replay [--iterations=N] [--seed=S] CORPUS_DIR_OR_FILE...
//
// Each input is copied into a heap block of exactly its size, so a sanitizer sees any read
// past it. Exits non-zero if no seed could be read (a misplaced corpus must not pass).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

// The input being run, for the crash report.
const Bytes* g_current = nullptr;

// On a crash or a broken promise (abort), print the input in hex, then die as before.
void ReportInput(int signal_number) {
  static const char kHex[] = "0123456789abcdef";
  static const char kIntro[] = "\nreplay: crashed on input (hex): ";
  if (write(STDERR_FILENO, kIntro, sizeof(kIntro) - 1) < 0) _exit(1);
  if (g_current != nullptr) {
    for (uint8_t b : *g_current) {
      const char pair[2] = {kHex[b >> 4], kHex[b & 0xF]};
      if (write(STDERR_FILENO, pair, 2) < 0) break;
    }
  }
  if (write(STDERR_FILENO, "\n", 1) < 0) _exit(1);
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void Run(const Bytes& input) {
  g_current = &input;
  std::unique_ptr<uint8_t[]> copy(new uint8_t[input.size()]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  g_current = nullptr;
}

bool ReadFile(const std::filesystem::path& path, std::vector<Bytes>* seeds) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  seeds->emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

// Values that sit on the parsers' boundaries: framing bytes and lengths.
constexpr uint8_t kInterestingBytes[] = {0,   1,   4,   5,   8,    12,   0x20, 0x7f, 0x80,
                                         0xff, '\r', '\n', '*',  '$',  '-',  ':',  '+',  ' ',
                                         '0', '9', 'Q', 'P', 'E', '/', '.', 63, 64, 0xc0};
constexpr uint32_t kInterestingWords[] = {0, 1, 3, 4, 5, 8, 12, 16, 0x7f, 0x80, 0xff, 0x100,
                                          0xffff, 0x30000, 80877103, 0x40000000, 0x7fffffff,
                                          0xffffffff};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  Bytes RandomBytes() {
    Bytes out(Below(200));
    for (uint8_t& b : out) b = static_cast<uint8_t>(rng_());
    return out;
  }

  void Mutate(Bytes& b) {
    const size_t count = 1 + Below(6);
    for (size_t i = 0; i < count; ++i) {
      switch (Below(8)) {
        case 0:
          if (!b.empty()) b[Below(b.size())] ^= static_cast<uint8_t>(1u << Below(8));
          break;
        case 1:
          if (!b.empty()) b[Below(b.size())] = static_cast<uint8_t>(rng_());
          break;
        case 2:
          if (!b.empty()) {
            b[Below(b.size())] = kInterestingBytes[Below(std::size(kInterestingBytes))];
          }
          break;
        case 3:
          b.insert(b.begin() + static_cast<ptrdiff_t>(Below(b.size() + 1)),
                   kInterestingBytes[Below(std::size(kInterestingBytes))]);
          break;
        case 4:
          if (!b.empty()) b.erase(b.begin() + static_cast<ptrdiff_t>(Below(b.size())));
          break;
        case 5:
          b.resize(Below(b.size() + 1));
          break;
        case 6:
          if (b.size() >= 4) {
            // A big-endian 16- or 32-bit length.
            const uint32_t word = kInterestingWords[Below(std::size(kInterestingWords))];
            const size_t width = Below(2) ? 4 : 2;
            const size_t at = Below(b.size() - width + 1);
            for (size_t k = 0; k < width; ++k) {
              b[at + k] = static_cast<uint8_t>(word >> (8 * (width - 1 - k)));
            }
          }
          break;
        case 7:
          if (!b.empty() && b.size() < 512) {
            // Repeat a chunk: nested framing, repeated labels.
            const size_t from = Below(b.size());
            const size_t len = 1 + Below(std::min<size_t>(16, b.size() - from));
            Bytes chunk(b.begin() + static_cast<ptrdiff_t>(from),
                        b.begin() + static_cast<ptrdiff_t>(from + len));
            b.insert(b.begin() + static_cast<ptrdiff_t>(Below(b.size() + 1)), chunk.begin(),
                     chunk.end());
          }
          break;
      }
    }
  }

  Bytes Splice(const Bytes& a, const Bytes& b) {
    Bytes out(a.begin(), a.begin() + static_cast<ptrdiff_t>(Below(a.size() + 1)));
    out.insert(out.end(), b.begin() + static_cast<ptrdiff_t>(Below(b.size() + 1)), b.end());
    return out;
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 300000;
  uint64_t seed = 20240601;
  std::vector<Bytes> seeds;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--iterations=", 0) == 0) {
      iterations = std::strtoull(arg.c_str() + 13, nullptr, 10);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(arg.c_str() + 7, nullptr, 10);
    } else if (std::filesystem::is_directory(arg)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(arg)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());  // deterministic whatever the directory order
      for (const auto& file : files) ReadFile(file, &seeds);
    } else if (!ReadFile(arg, &seeds)) {
      std::fprintf(stderr, "cannot read %s\n", arg.c_str());
      return 2;
    }
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "no seed inputs: pass the corpus directory\n");
    return 2;
  }

  for (int signal_number : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
    std::signal(signal_number, ReportInput);
  }
  const auto start = std::chrono::steady_clock::now();
  uint64_t runs = 0;
  for (const Bytes& s : seeds) {
    for (size_t n = 0; n <= s.size(); ++n) {
      Run(Bytes(s.begin(), s.begin() + static_cast<ptrdiff_t>(n)));
      ++runs;
    }
  }
  Mutator mutator(seed);
  for (uint64_t i = 0; i < iterations; ++i) {
    Bytes input;
    switch (mutator.Below(8)) {
      case 0:
        input = mutator.RandomBytes();
        break;
      case 1:
        input = mutator.Splice(seeds[mutator.Below(seeds.size())],
                               seeds[mutator.Below(seeds.size())]);
        mutator.Mutate(input);
        break;
      default:
        input = seeds[mutator.Below(seeds.size())];
        mutator.Mutate(input);
        break;
    }
    Run(input);
    ++runs;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%zu seeds, %llu inputs in %.2f s\n", seeds.size(),
              static_cast<unsigned long long>(runs), seconds);
  return 0;
}
