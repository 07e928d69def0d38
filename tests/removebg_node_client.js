// Drives npm's stock `remove.bg` client (installed by tests/test_serve.py into a temporary folder, found
// through NODE_PATH) against our server. The client is used unchanged; its hard-coded endpoint
// https://api.remove.bg is redirected by the one override below, on the HTTP library it requires.
// Usage: REMOVEBG_BASE=http://127.0.0.1:PORT node removebg_node_client.js KEY IMAGE OUTDIR
// Prints one JSON object with what each call resolved to; exits 1 with the client's rejection on failure.
const fs = require("fs");
const path = require("path");
const unirest = require("unirest");
const post = unirest.post;
unirest.post = (url, ...rest) => post(url.replace("https://api.remove.bg", process.env.REMOVEBG_BASE), ...rest);
const removeBg = require("remove.bg");

const [apiKey, image, outDir] = process.argv.slice(2);

function summary(result, outputFile) {
  return {
    width: Number(result.resultWidth), height: Number(result.resultHeight), type: result.detectedType,
    credits: Number(result.creditsCharged), rateLimit: Number(result.rateLimit),
    rateLimitRemaining: Number(result.rateLimitRemaining), rateLimitReset: Number(result.rateLimitReset),
    base64Length: result.base64img.length, outputFile,
  };
}

(async () => {
  const fileOut = path.join(outDir, "from-file.png");
  const fromFile = await removeBg.removeBackgroundFromImageFile({
    path: image, apiKey, size: "regular", type: "auto", outputFile: fileOut,
  });
  const b64Out = path.join(outDir, "from-base64.png");
  const fromBase64 = await removeBg.removeBackgroundFromImageBase64({
    base64img: fs.readFileSync(image).toString("base64"), apiKey, size: "preview", crop: true,
    crop_margin: "10px", bg_color: "81d4fa", outputFile: b64Out,
  });
  let refused = null;
  try {
    await removeBg.removeBackgroundFromImageFile({ path: image, apiKey: "not-a-key" });
  } catch (errors) {
    refused = errors;
  }
  console.log(JSON.stringify({
    file: summary(fromFile, fileOut), base64: summary(fromBase64, b64Out), refused,
  }));
})().catch((e) => {
  console.error(JSON.stringify(e));
  process.exit(1);
});
