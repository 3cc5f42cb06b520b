// classify: run a licensed MLCapsule classifier on one input, with the C++ SDK.
//
//   classify_cpp MODEL.capsule STATE_DIR INPUT [LEASE]
//
// Same behaviour as examples/c/classify.c: print the state and quota; install LEASE when given;
// without a usable lease write evidence-request.bin for the provider; read INPUT (.npy float32 or
// int64, or raw little-endian float32 shaped like the model's first input), infer and print the
// top class. Links only libmlcapsule.so (the SDK is header-only over the C API).
#include <mlcapsule/mlcapsule.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace mlc = mlcapsule::sdk;

namespace {

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// NumPy .npy, version 1-3, little-endian '<f4' or '<i8', C order.
mlc::Tensor ParseNpy(const std::vector<uint8_t>& file, const std::string& path) {
  auto fail = [&](const std::string& why) { return std::runtime_error(path + ": " + why); };
  if (file.size() < 12 || std::memcmp(file.data(), "\x93NUMPY", 6) != 0) throw fail("not .npy");
  size_t header_len = file[8] | (file[9] << 8);
  size_t offset = 10;
  if (file[6] != 1) {
    header_len |= (size_t{file[10]} << 16) | (size_t{file[11]} << 24);
    offset = 12;
  }
  if (header_len > file.size() - offset) throw fail("truncated header");
  const std::string header(file.begin() + static_cast<std::ptrdiff_t>(offset),
                           file.begin() + static_cast<std::ptrdiff_t>(offset + header_len));
  if (header.find("'fortran_order': True") != std::string::npos) throw fail("Fortran order");
  mlc_dtype dtype;
  if (header.find("'<f4'") != std::string::npos) {
    dtype = MLC_DTYPE_FLOAT32;
  } else if (header.find("'<i8'") != std::string::npos) {
    dtype = MLC_DTYPE_INT64;
  } else {
    throw fail("only '<f4' and '<i8' are supported");
  }
  size_t pos = header.find("'shape':");
  pos = pos == std::string::npos ? pos : header.find('(', pos);
  if (pos == std::string::npos) throw fail("no shape");
  std::vector<int64_t> dims;
  size_t elements = 1;
  for (++pos; pos < header.size() && header[pos] != ')';) {
    if (header[pos] == ' ' || header[pos] == ',') {
      ++pos;
      continue;
    }
    size_t used = 0;
    dims.push_back(std::stoll(header.substr(pos), &used));
    elements *= static_cast<size_t>(dims.back());
    pos += used;
  }
  const size_t data_offset = offset + header_len;
  if (file.size() - data_offset != elements * mlc_dtype_size(dtype)) throw fail("size mismatch");
  return mlc::Tensor(
      dtype, std::move(dims),
      std::vector<uint8_t>(file.begin() + static_cast<std::ptrdiff_t>(data_offset), file.end()));
}

// Raw float32: the model's first input shape, with the batch size that the file fills.
mlc::Tensor ShapeRaw(const mlc::Client& client, std::vector<uint8_t> bytes) {
  const mlc::TensorInfo info = client.inputs().at(0);
  size_t per_example = 1;
  for (int64_t d : info.dims) per_example *= static_cast<size_t>(d);
  const size_t values = bytes.size() / sizeof(float);
  if (info.dtype != MLC_DTYPE_FLOAT32 || bytes.size() % sizeof(float) != 0 || per_example == 0 ||
      values % per_example != 0)
    throw std::runtime_error("the raw input does not hold whole float32 examples of " +
                             std::to_string(per_example) + " values for input " + info.name);
  std::vector<int64_t> dims = info.dims;
  for (size_t i = 0; i < dims.size(); ++i)
    if (info.is_batch(i)) dims[i] *= static_cast<int64_t>(values / per_example);
  return mlc::Tensor(MLC_DTYPE_FLOAT32, std::move(dims), std::move(bytes));
}

void PrintStatus(const mlc::Client& client) {
  std::cout << "capsule " << client.capsule_id() << ": ";
  if (client.state() == mlc::State::kNeedsLease) {
    std::cout << "needs a lease\n";
    return;
  }
  const mlc::Quota quota = client.quota();
  std::cout << "ready, license " << client.license_id() << ", " << quota.queries_left << " of "
            << quota.query_quota << " queries left, expires at " << quota.expires_at << "\n";
}

void PrintTop(const mlc::Tensor& output) {
  if (output.dtype() == MLC_DTYPE_INT64) {  // label-only policies answer the class itself
    if (!output.int64s().empty())
      std::cout << output.name() << ": class " << output.int64s()[0] << "\n";
    return;
  }
  std::span<const float> scores = output.floats();
  const size_t classes =
      output.dims().empty() ? scores.size() : static_cast<size_t>(output.dims().back());
  if (classes == 0 || classes > scores.size()) return;
  auto first = scores.first(classes);
  const size_t best =
      static_cast<size_t>(std::max_element(first.begin(), first.end()) - first.begin());
  std::cout << output.name() << ": top class " << best << " (score " << first[best] << " of "
            << classes << " classes)\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::cerr << "usage: " << argv[0]
              << " MODEL.capsule STATE_DIR INPUT(.npy|raw float32) [LEASE]\n";
    return 2;
  }
  try {
    mlc::Client client = mlc::Client::Open(argv[1], {.state_dir = argv[2]});
    std::cout << "trusted core: " << client.backend() << "\n";
    PrintStatus(client);
    if (argc == 5) {
      client.InstallLease(ReadFile(argv[4]));
      std::cout << "installed lease " << argv[4] << "\n";
      PrintStatus(client);
    }
    if (client.state() == mlc::State::kNeedsLease) {
      std::array<uint8_t, MLC_NONCE_BYTES> nonce;
      std::random_device random;
      for (uint8_t& b : nonce) b = static_cast<uint8_t>(random());
      WriteFile("evidence-request.bin", client.EvidenceRequest(nonce));
      std::cout << "wrote evidence-request.bin: send it to the provider and run again with the "
                   "lease it answers\n";
      client.Close();
      return 3;
    }
    std::vector<uint8_t> bytes = ReadFile(argv[3]);
    mlc::Tensor input = bytes.size() >= 6 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0
                            ? ParseNpy(bytes, argv[3])
                            : ShapeRaw(client, std::move(bytes));
    for (const mlc::Tensor& output : client.Infer({input})) PrintTop(output);
    PrintStatus(client);
    client.Close();
    return 0;
  } catch (const mlc::Error& e) {
    // e.code() == MLC_ERR_RESOURCE_EXHAUSTED: the quota is used up; report usage, get a lease.
    std::cerr << "error (" << e.code_name() << "): " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}
