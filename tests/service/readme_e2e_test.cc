// The grpcurl commands of the README and docs/ (ReadUserDocs), checked against the running server
// (grpcurl itself is not installable here): each service, method or symbol must be known to
// reflection, each -d body must parse as the method's request type with protobuf's JSON parser
// (what grpcurl uses), and each call must succeed. The run command shown (docs/serving.md) must
// be the one scripts/run executes, and the README must show the two commands.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

namespace pb = ::google::protobuf;
namespace refl = ::grpc::reflection::v1alpha;

// Words of the shell commands in the ```sh blocks of `markdown`: single quotes (which may span
// lines), backslash-newline continuations, double quotes without escapes, # comments.
std::vector<std::vector<std::string>> ShellCommands(const std::string& markdown) {
  std::vector<std::vector<std::string>> commands;
  std::vector<std::string> lines = absl::StrSplit(markdown, '\n');
  std::string block;
  bool in_sh = false;
  std::vector<std::string> blocks;
  for (const std::string& line : lines) {
    if (!in_sh && absl::StartsWith(line, "```sh")) {
      in_sh = true;
      block.clear();
    } else if (in_sh && absl::StartsWith(line, "```")) {
      in_sh = false;
      blocks.push_back(block);
    } else if (in_sh) {
      block += line + "\n";
    }
  }
  for (const std::string& b : blocks) {
    std::vector<std::string> words;
    std::string word;
    bool have_word = false;
    auto end_word = [&] {
      if (have_word) words.push_back(word);
      word.clear();
      have_word = false;
    };
    auto end_command = [&] {
      end_word();
      if (!words.empty()) commands.push_back(words);
      words.clear();
    };
    for (size_t i = 0; i < b.size(); ++i) {
      const char c = b[i];
      if (c == '\'') {
        const size_t close = b.find('\'', i + 1);
        word += b.substr(i + 1, close - i - 1);
        have_word = true;
        i = close;
      } else if (c == '"') {
        const size_t close = b.find('"', i + 1);
        word += b.substr(i + 1, close - i - 1);
        have_word = true;
        i = close;
      } else if (c == '\\' && i + 1 < b.size() && b[i + 1] == '\n') {
        end_word();
        ++i;
      } else if (c == '\n') {
        end_command();
      } else if (c == ' ' || c == '\t') {
        end_word();
      } else if (c == '#' && !have_word) {
        while (i + 1 < b.size() && b[i + 1] != '\n') ++i;
      } else {
        word += c;
        have_word = true;
      }
    }
    end_command();
  }
  return commands;
}

struct GrpcurlCommand {
  bool plaintext = false;
  std::string data;  // -d
  std::string address;
  std::string verb;    // list, describe, or a method "pkg.Service/Method"
  std::string symbol;  // list/describe argument
};

// Fails the test for flags grpcurl would not take the way they are written here.
GrpcurlCommand ParseGrpcurl(const std::vector<std::string>& words) {
  GrpcurlCommand c;
  std::vector<std::string> positional;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w == "-plaintext") {
      c.plaintext = true;
    } else if (w == "-d") {
      EXPECT_LT(i + 1, words.size());
      c.data = words[++i];
    } else if (w == "-max-time" || w == "-connect-timeout") {
      EXPECT_LT(i + 1, words.size());
      double seconds = 0;
      EXPECT_TRUE(absl::SimpleAtod(words[++i], &seconds)) << w << " needs seconds";
    } else if (absl::StartsWith(w, "-")) {
      ADD_FAILURE() << "flag not checked by this test: " << w;
    } else {
      positional.push_back(w);
    }
  }
  EXPECT_GE(positional.size(), 2u);
  if (positional.size() >= 2) {
    c.address = positional[0];
    c.verb = positional[1];
  }
  if (positional.size() >= 3) c.symbol = positional[2];
  return c;
}

// A reflection client, as grpcurl is one: the descriptors it learns go into one database.
class Reflection {
 public:
  explicit Reflection(std::shared_ptr<grpc::Channel> channel)
      : stub_(refl::ServerReflection::NewStub(channel)),
        stream_(stub_->ServerReflectionInfo(&ctx_)),
        pool_(&db_) {}
  ~Reflection() {
    stream_->WritesDone();
    stream_->Finish();
  }

  std::vector<std::string> ListServices() {
    refl::ServerReflectionRequest req;
    req.set_list_services("");
    refl::ServerReflectionResponse resp = Ask(req);
    std::vector<std::string> out;
    for (const auto& s : resp.list_services_response().service()) out.push_back(s.name());
    return out;
  }

  // Loads the file defining `symbol` (and its dependencies). False when the server does not
  // know it.
  bool Load(const std::string& symbol) {
    refl::ServerReflectionRequest req;
    req.set_file_containing_symbol(symbol);
    refl::ServerReflectionResponse resp = Ask(req);
    if (resp.has_error_response()) return false;
    for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
      pb::FileDescriptorProto file;
      if (!file.ParseFromString(bytes)) return false;
      if (added_.insert(file.name()).second) db_.Add(file);
    }
    return true;
  }

  const pb::DescriptorPool& pool() const { return pool_; }

 private:
  refl::ServerReflectionResponse Ask(const refl::ServerReflectionRequest& req) {
    refl::ServerReflectionResponse resp;
    EXPECT_TRUE(stream_->Write(req));
    EXPECT_TRUE(stream_->Read(&resp));
    return resp;
  }

  std::unique_ptr<refl::ServerReflection::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<refl::ServerReflectionRequest, refl::ServerReflectionResponse>>
      stream_;
  std::set<std::string> added_;
  pb::SimpleDescriptorDatabase db_;
  pb::DescriptorPool pool_;
};

// Calls `method` ("/pkg.Service/Method") with raw request bytes; returns the status and the
// response messages' bytes. Works for unary and server-streaming methods alike.
grpc::Status CallRaw(std::shared_ptr<grpc::Channel> channel, const std::string& method,
                     const std::string& request, std::vector<std::string>* responses) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto wait = [&cq]() {
    void* tag;
    bool ok = false;
    cq.Next(&tag, &ok);
    return ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&ctx, method, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  wait();
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  wait();
  call->WritesDone(reinterpret_cast<void*>(3));
  wait();
  while (true) {
    grpc::ByteBuffer out;
    call->Read(&out, reinterpret_cast<void*>(4));
    if (!wait()) break;
    std::vector<grpc::Slice> slices;
    (void)out.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    responses->push_back(std::move(bytes));
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

class ReadmeE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    readme_ = new std::string(ReadUserDocs());
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-q3_k_m.gguf";  // what scripts/run serves
    o.forced_output = false;
    // As `scripts/run --mmproj ...` in the README's image examples.
    o.extra = {"--mmproj=" + DataPath("models/mmproj-tiny-qwen35-f32.gguf")};
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete readme_;
  }
  static std::vector<GrpcurlCommand> Commands() {
    std::vector<GrpcurlCommand> out;
    for (const auto& words : ShellCommands(*readme_)) {
      if (words[0] == "grpcurl") out.push_back(ParseGrpcurl(words));
    }
    return out;
  }
  static std::string* readme_;
  static ServerProcess* server_;
};

std::string* ReadmeE2eTest::readme_ = nullptr;
ServerProcess* ReadmeE2eTest::server_ = nullptr;

TEST_F(ReadmeE2eTest, TheRunCommandIsWhatScriptsRunExecutes) {
  const std::string readme = ReadFile("README.md");
  EXPECT_THAT(readme, ::testing::HasSubstr("scripts/run     #"));
  EXPECT_THAT(readme, ::testing::HasSubstr("scripts/test    #"));
  const std::string script = ReadFile("scripts/run");
  std::string exec_line;
  for (absl::string_view line : absl::StrSplit(script, '\n')) {
    if (absl::StartsWith(line, "exec ")) exec_line = std::string(line);
  }
  ASSERT_FALSE(exec_line.empty());
  EXPECT_TRUE(absl::StartsWith(exec_line, "exec build/bin/qwen serve --model tests/data/models/"));
  EXPECT_THAT(*readme_, ::testing::HasSubstr(exec_line)) << "README does not show: " << exec_line;
  EXPECT_THAT(exec_line, ::testing::HasSubstr("--port 50051"));
}

TEST_F(ReadmeE2eTest, TheReadmeShowsEveryMethod) {
  std::vector<std::string> verbs;
  for (const GrpcurlCommand& c : Commands()) verbs.push_back(c.verb);
  EXPECT_THAT(verbs, ::testing::IsSupersetOf({"list", "describe", "grpc.health.v1.Health/Check",
                                              "qwen.v1.Qwen/Generate", "qwen.v1.Qwen/Tokenize",
                                              "qwen.v1.Qwen/Detokenize", "qwen.v1.Qwen/RenderChat",
                                              "qwen.v1.Qwen/GetModelInfo"}));
}

TEST_F(ReadmeE2eTest, EveryGrpcurlCommandWorksAsWritten) {
  const std::vector<GrpcurlCommand> commands = Commands();
  ASSERT_GE(commands.size(), 8u);
  Reflection reflection(server_->channel());
  const std::vector<std::string> services = reflection.ListServices();
  EXPECT_THAT(services, ::testing::IsSupersetOf({"qwen.v1.Qwen", "grpc.health.v1.Health"}));
  pb::DynamicMessageFactory factory(&reflection.pool());
  for (const GrpcurlCommand& c : commands) {
    SCOPED_TRACE(c.verb + " " + c.symbol + " " + c.data);
    EXPECT_TRUE(c.plaintext) << "the server speaks plaintext: -plaintext is needed";
    EXPECT_EQ(c.address, "localhost:50051");  // where scripts/run listens
    if (c.verb == "list") {
      if (!c.symbol.empty()) {
        EXPECT_THAT(services, ::testing::Contains(c.symbol));
      }
      continue;
    }
    if (c.verb == "describe") {
      ASSERT_FALSE(c.symbol.empty());
      EXPECT_TRUE(reflection.Load(c.symbol)) << "reflection does not know " << c.symbol;
      continue;
    }
    const std::vector<std::string> parts = absl::StrSplit(c.verb, '/');
    ASSERT_EQ(parts.size(), 2u) << "not Service/Method: " << c.verb;
    ASSERT_TRUE(reflection.Load(parts[0])) << "reflection does not know " << parts[0];
    const pb::ServiceDescriptor* service = reflection.pool().FindServiceByName(parts[0]);
    ASSERT_NE(service, nullptr);
    const pb::MethodDescriptor* method = service->FindMethodByName(parts[1]);
    ASSERT_NE(method, nullptr) << "no method " << parts[1];
    std::unique_ptr<pb::Message> request(factory.GetPrototype(method->input_type())->New());
    const std::string body = c.data.empty() ? "{}" : c.data;
    auto parsed = pb::util::JsonStringToMessage(body, request.get());
    ASSERT_TRUE(parsed.ok()) << "the -d body does not parse as "
                             << method->input_type()->full_name() << ": " << parsed.ToString();
    std::vector<std::string> responses;
    grpc::Status st = CallRaw(server_->channel(), absl::StrCat("/", parts[0], "/", parts[1]),
                              request->SerializeAsString(), &responses);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_FALSE(responses.empty());
    for (const std::string& bytes : responses) {
      std::unique_ptr<pb::Message> response(factory.GetPrototype(method->output_type())->New());
      ASSERT_TRUE(response->ParseFromString(bytes));
      std::string json;
      EXPECT_TRUE(pb::util::MessageToJsonString(*response, &json).ok());
    }
  }
}

}  // namespace
}  // namespace qwen::testing
